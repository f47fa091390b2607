"""A private registry (htpasswd basic auth): credentials work, and never reach argv or the environment."""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.errors import PermanentError
from cairn.images import build, registry, skopeo
from cairn.images.credentials import Credentials
from cairn.images.reference import Reference
from cairn.images.store import ImageStore, resolve
from tests.images.conftest import Images

USER = "deployer"
PASSWORD = "s3cret-Pa55-never-in-argv"


def _bcrypt(password: str) -> str:
    # distribution reads only bcrypt htpasswd lines; libxcrypt (through the stdlib's crypt)
    # makes them without another dependency for a test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))


@pytest.fixture(scope="module")
def private_registry(image_tmp: Path) -> Iterator[str]:
    state = image_tmp / "private-registry"
    state.mkdir()
    htpasswd = state / "htpasswd"
    htpasswd.write_text(f"{USER}:{_bcrypt(PASSWORD)}\n")
    url = registry.start(state, port=0, htpasswd=htpasswd)
    yield url
    registry.stop(state)


@pytest.fixture(scope="module")
def private_image(images: Images, private_registry: str) -> tuple[str, str]:
    """The base image pushed to the private registry with credentials (push's auth file path)."""
    creds = Credentials(USER, PASSWORD)
    digest = build.push(images.layout, "cairn/python:3.11", private_registry, as_name="team/python:3.11",
                        credentials=creds)
    assert digest == images.manifests["cairn/python:3.11"]
    return f"{private_registry}/team/python:3.11", digest


def test_a_private_registry_refuses_without_or_with_wrong_credentials(private_image: tuple[str, str],
                                                                     image_tmp: Path) -> None:
    ref, digest = private_image
    with pytest.raises(PermanentError) as anonymous:
        resolve(ref)
    assert "refused access" in str(anonymous.value)
    wrong = Credentials(USER, "not-the-password")
    with pytest.raises(PermanentError) as refused:
        ImageStore(image_tmp / "store-wrong-creds").pull(f"{ref}@{digest}", wrong)
    assert "not-the-password" not in str(refused.value) and "not-the-password" not in repr(refused.value)
    assert resolve(ref, Credentials(USER, PASSWORD)) == digest


def test_credentials_reach_skopeo_in_a_private_file_never_in_argv_or_env(private_image: tuple[str, str],
                                                                         image_tmp: Path) -> None:
    ref, digest = private_image
    record = image_tmp / "skopeo-seen"
    record.mkdir()
    # A skopeo in front of the real one that writes down what the process was given: its own
    # argv and environment as the kernel shows them to every other process (/proc/PID/...),
    # and the auth file's and its directory's modes while skopeo runs.
    wrapper = image_tmp / "skopeo-recording"
    wrapper.write_text(f"""#!/bin/sh
tr '\\0' '\\n' < /proc/$$/cmdline > {record}/argv
tr '\\0' '\\n' < /proc/$$/environ > {record}/environ
prev=
for arg in "$@"; do
  if [ "$prev" = --src-authfile ]; then
    echo "$arg" > {record}/authfile
    stat -c %a "$arg" > {record}/file-mode
    stat -c %a "$(dirname "$arg")" > {record}/dir-mode
  fi
  prev=$arg
done
exec /usr/bin/skopeo "$@"
""")
    wrapper.chmod(0o755)
    store = ImageStore(image_tmp / "store-private", skopeo_bin=str(wrapper))
    assert store.pull(f"{ref}@{digest}", Credentials(USER, PASSWORD)) == digest
    assert store.has(digest)

    argv = (record / "argv").read_text()
    environ = (record / "environ").read_text()
    assert argv.splitlines()[:2] == ["/bin/sh", str(wrapper)] and "--src-authfile" in argv.splitlines()  # sh runs the script
    for secret in (PASSWORD, Credentials(USER, PASSWORD).basic()):
        assert secret not in argv and secret not in environ
    assert (record / "file-mode").read_text().strip() == "600"
    assert (record / "dir-mode").read_text().strip() == "700"
    assert not Path((record / "authfile").read_text().strip()).exists()  # removed after the copy


def test_the_argv_skopeo_gets_is_built_from_file_paths_only() -> None:
    ref = Reference.parse("registry.example.com/team/app:v1")
    with skopeo.auth_file(ref.registry, Credentials(USER, PASSWORD)) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        argv = skopeo.copy_argv(f"docker://{ref}", "oci:/x:y", src_ref=ref, src_authfile=path)
        assert PASSWORD not in " ".join(argv) and str(path) in argv
        assert "--src-tls-verify=false" not in argv  # TLS is verified beyond loopback
    assert not path.exists() and not path.parent.exists()
    anonymous = skopeo.copy_argv(f"docker://{ref}", "oci:/x:y", src_ref=ref)
    assert "--src-no-creds" in anonymous  # never the host's own auth.json
    assert PASSWORD not in repr(Credentials(USER, PASSWORD))


@pytest.mark.skipif(os.geteuid() != 0, reason="the local runtime needs root")
def test_the_local_runtime_pulls_a_private_image_with_its_login_and_refuses_without(private_image: tuple[str, str],
                                                                                  image_tmp: Path) -> None:
    """ensure's pull_login (what the release task reads from image_pull_secret) reaches the agent's
    pull; without it the registry's refusal fails ensure before anything starts."""
    from cairn.config import EnvironmentSpec
    from cairn.revision import Revision
    from cairn.runtime import EnvRef
    from cairn.runtimes.local import LocalRuntime, start_agent, stop_agent

    ref, _ = private_image
    state = image_tmp / "private-agent"
    start_agent(state)
    try:
        runtime = LocalRuntime(state)
        env = EnvRef("local", "private", "test")
        spec = EnvironmentSpec.model_validate({
            "cluster": "local", "image": ref, "image_pull_secret": "team-registry", "instances": 2, "cpu": 0.1,
            "memory_mb": 64, "command": ["sleep", "600"]})
        image_revision = Revision(app="private", environment="test", deploy_type="image", version="3.11", spec=spec)
        with pytest.raises(PermanentError) as refused:
            runtime.ensure(env, [0], image_revision)
        assert "refused access" in str(refused.value) and runtime.observe(env) == []
        runtime.ensure(env, [0], image_revision, pull_login=(USER, PASSWORD))
        [instance] = runtime.observe(env)
        assert instance.revision == image_revision.digest
        pulled = [e.message for e in runtime.events(env) if e.reason == "Pulled"]
        assert pulled and ref.split(":")[0] in pulled[-1] and PASSWORD not in " ".join(pulled)
        assert not [p for p in state.rglob("*") if p.is_file() and p.name != "netns" and PASSWORD.encode() in p.read_bytes()]
    finally:
        stop_agent(state, purge=True)
