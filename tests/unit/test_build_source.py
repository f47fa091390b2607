"""Issue 10's input rules: the code source in the configuration file, build version names, the package store's refusals."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cairn import packages
from cairn.configfile import load_data
from cairn.errors import ConfigError, NotFound, PermanentError

SOURCE = {"repo": "file:///srv/git/shop-api", "ref": "main", "build_command": "make dist", "output_dir": "dist"}
ENV = {"image": "cairn/python:3.11", "instances": 2, "cpu": 0.5, "memory_mb": 64, "deploy_root": "/acs/code"}


def config(**source: Any) -> dict[str, Any]:
    return {"clusters": [{"name": "a"}, {"name": "b"}],
            "apps": [{"name": "shop-api", "deploy_type": "code-package", "source": {**SOURCE, **source},
                      "environments": {"production": {**ENV, "cluster": "a"}, "test": {**ENV, "cluster": "b"}}}]}


def test_source_loads_from_the_configuration_file() -> None:
    source = load_data(config(output_dir="dist/", env={"CI": "1"}, secret_env={"NPM_TOKEN": "npm-token"})).apps[0].source
    assert source is not None and source.output_dir == "dist" and source.timeout_s == 600 and source.ref == "main"
    assert (source.image, source.network, source.cpu, source.memory_mb, source.credentials_secret) == (
        "cairn/python:3.11", "none", 1.0, 1024, None), "the sandbox's defaults: the python image, no network"


@pytest.mark.parametrize("change, field", [
    ({"ref": "--upload-pack=touch /tmp/x"}, "source.ref"),
    ({"ref": "a..b"}, "source.ref"),
    ({"repo": "-oProxyCommand=x"}, "source.repo"),
    ({"repo": "relative/dir"}, "source.repo"),
    ({"output_dir": "/abs"}, "source.output_dir"),
    ({"output_dir": "../up"}, "source.output_dir"),
    ({"build_command": "  "}, "source.build_command"),
    ({"timeout_s": 0}, "source.timeout_s"),
    ({"env": {"1X": "y"}}, "source.env"),
    ({"secret_env": {"TOKEN": "Not A Secret"}}, "source.secret_env"),
    ({"env": {"T": "1"}, "secret_env": {"T": "tok"}}, "source.secret_env.T"),
    ({"env": {"HOME": "/root"}}, "source.env.HOME"),
    ({"branch": "main"}, "source.branch"),
    pytest.param({"image": "not an image"}, "source.image", id="the build image is an OCI reference"),
    pytest.param({"network": "bridge"}, "source.network", id="the network is none or host"),
    pytest.param({"cpu": 0}, "source.cpu", id="cpu is positive"),
    pytest.param({"cpu": float("inf")}, "source.cpu", id="cpu is finite"),
    pytest.param({"cpu": float("nan")}, "source.cpu", id="cpu is a number"),
    pytest.param({"cpu": 65}, "source.cpu", id="cpu has an upper bound"),
    pytest.param({"memory_mb": 16}, "source.memory_mb", id="memory has the environments' floor"),
    pytest.param({"memory_mb": 10**7}, "source.memory_mb", id="memory has an upper bound"),
    pytest.param({"memory_mb": 512.5}, "source.memory_mb", id="memory is a whole number of MB"),
    pytest.param({"timeout_s": float("inf")}, "source.timeout_s", id="the timeout is finite"),
    pytest.param({"credentials_secret": "Git Login"}, "source.credentials_secret", id="the credentials secret is a block name"),
    pytest.param({"credentials_secret": "git-login"}, "source.credentials_secret",
                 id="credentials apply to http(s) repositories only"),
])
def test_bad_source_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_data(config(**change))
    assert info.value.problems[0][0] == f"apps[shop-api].{field}", info.value.problems


@pytest.mark.parametrize("repo", [
    pytest.param("https://builder:tok-9d2e@git.example/shop.git", id="a user and password in an https URL"),
    pytest.param("https://tok-9d2e@git.example/shop.git", id="a token as the user of an https URL"),
    pytest.param("HTTP://builder:tok-9d2e@git.example/shop.git", id="an upper-case scheme"),
    pytest.param("ssh://git:tok-9d2e@git.example/shop.git", id="a password in an ssh URL"),
])
def test_a_repo_url_with_credentials_is_refused_without_echoing_them(repo: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_data(config(repo=repo))
    field, value, fix = info.value.problems[0]
    assert field == "apps[shop-api].source.repo" and "use" in fix and "credentials_secret" in fix
    assert "tok-9d2e" not in str(info.value) and value.endswith("git.example/shop.git")


@pytest.mark.parametrize("change", [
    pytest.param({"repo": "ssh://git@git.example/shop.git"}, id="an ssh user name is no secret"),
    pytest.param({"repo": "git@git.example:shop.git"}, id="nor is an scp-style one"),
    pytest.param({"repo": "https://git.example/shop.git", "credentials_secret": "git-login"}, id="https with a credentials secret"),
    pytest.param({"image": "127.0.0.1:5000/tools/node:20", "network": "host", "cpu": 2, "memory_mb": 4096},
                 id="another toolchain's image, the host network and bigger limits"),
])
def test_good_sources_load(change: dict[str, Any]) -> None:
    source = load_data(config(**change)).apps[0].source
    assert source is not None and all(getattr(source, k) == v for k, v in change.items())


def test_build_version_names_are_release_versions() -> None:
    from cairn.revision import VERSION

    commit = "0123456789abcdef0123456789abcdef01234567"
    assert packages.build_version("main", commit) == "main-0123456789ab"
    for ref in ("feature/login", "v1.2.3", "x" * 200, "refs/heads/_tmp"):
        assert VERSION.match(packages.build_version(ref, commit)), ref


def _tar(name: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buf.getvalue()


def _stored() -> list[str]:
    root = packages.store_dir()
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_store_refuses_escaping_archives_and_heals_tampered_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    for name in ("/etc/passwd", "../escape", "a/../../b"):
        with pytest.raises(ConfigError, match="relative paths"):
            packages.add("shop-api", "bad", _tar(name), {"dir": "x"})
    assert _stored() == [], "a refused archive stores nothing"

    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("print('v1')\n")
    record = packages.add("shop-api", "v1", packages.pack_bytes(src), {"dir": str(src)})
    (src / "app.py").write_text("print('v2')\n")
    with pytest.raises(ConfigError, match="another digest"):
        packages.add("shop-api", "v1", packages.pack_bytes(src), {"dir": str(src)})
    assert len(_stored()) == 2, "the refused v1 left no second blob"

    assert packages.resolve("shop-api", record.digest[:12]) == packages.resolve("shop-api", "v1") == record
    with pytest.raises(NotFound):
        packages.resolve("shop-api", "0" * 12)

    packages.blob_path(record.digest).write_bytes(b"tampered")
    with pytest.raises(PermanentError, match="does not match its digest"):
        packages.unpack(record.digest, tmp_path / "out")
    (src / "app.py").write_text("print('v1')\n")
    packages.add("shop-api", "v1", packages.pack_bytes(src), {"dir": str(src)})
    assert packages.read_verified(record.digest), "adding the same tree again replaces the altered blob"
