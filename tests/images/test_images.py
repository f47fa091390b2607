"""The project's images against a real registry on loopback: build, push, resolve, pull, unpack."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.errors import ConfigError, PermanentError, TemporaryError
from cairn.images import build
from cairn.images.store import ImageStore, resolve
from tests.images.conftest import Images

REPO = Path(__file__).resolve().parents[2]
DEMO_APP = REPO / "examples" / "demo-app" / "app.py"


def _spec(rootfs: Path) -> dict[str, Any]:
    return dict(json.loads((rootfs.parent / "config.json").read_text()))


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()


def test_equal_inputs_build_equal_digests(images: Images, image_tmp: Path) -> None:
    again = build.build(image_tmp / "layout-again", ("v1", "v2"))
    assert again.manifests == images.manifests
    assert set(images.manifests) == {"cairn/python:3.11", "cairn/demo-app:v1", "cairn/demo-app:v2"}
    # The same inputs again into the same layout: reused as recorded, nothing rebuilt.
    reused = build.build(image_tmp / "layout-again", ("v2",))
    assert reused.manifests == {k: v for k, v in images.manifests.items() if k != "cairn/demo-app:v1"}
    assert images.manifests["cairn/demo-app:v1"] != images.manifests["cairn/demo-app:v2"]


def test_layers_have_no_owners_no_build_clock_and_sorted_entries(images: Images) -> None:
    manifest = json.loads(_blob(images.layout, images.manifests["cairn/demo-app:v1"]))
    base, app = (layer["digest"] for layer in manifest["layers"])
    python = json.loads(_blob(images.layout, images.manifests["cairn/python:3.11"]))
    assert python["layers"][0]["digest"] == base  # the versions share the base layer's blob
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(_blob(images.layout, base)))) as tar:
        members = tar.getmembers()
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    kept = {m.name for m in members if m.mtime != 0}
    assert kept and all(n.startswith("usr/lib/python3.11/") and n.endswith(".py") for n in kept)
    names = [m.name for m in members]
    top = [n for n in names if "/" not in n]
    assert top == sorted(top)
    assert {"usr/bin/python3.11", "usr/bin/busybox", "usr/lib/x86_64-linux-gnu/libc.so.6"} <= set(names)
    assert not any(n.startswith("usr/lib/python3.11/test/") for n in names)
    with tarfile.open(fileobj=gzip.GzipFile(fileobj=io.BytesIO(_blob(images.layout, app)))) as tar:
        assert tar.getnames() == ["acs", "acs/code", "acs/code/app.py"]
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert {"acs/code"} <= set(names)  # the deploy root code packages unpack into
    config = json.loads(_blob(images.layout, manifest["config"]["digest"]))
    assert {k: config["config"][k] for k in ("Entrypoint", "Cmd", "WorkingDir", "Env")} == {
        "Entrypoint": ["python3"], "Cmd": ["/acs/code/app.py"], "WorkingDir": "/acs/code",
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "APP_VERSION=v1", "PYTHONUNBUFFERED=1"]}
    assert config["created"] == "1970-01-01T00:00:00Z"
    base_config = json.loads(_blob(images.layout, python["config"]["digest"]))["config"]
    assert {k: base_config[k] for k in ("Entrypoint", "Cmd", "WorkingDir", "Env")} == {
        "Entrypoint": ["python3"], "Cmd": ["app.py"], "WorkingDir": "/acs/code",
        "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1"]}


def test_resolve_gives_the_built_digest_from_the_registry(images: Images) -> None:
    for name, digest in images.manifests.items():
        assert resolve(f"{images.registry}/{name}") == digest
    pinned = f"{images.registry}/cairn/python:3.11@{images.manifests['cairn/python:3.11']}"
    assert resolve(pinned) == images.manifests["cairn/python:3.11"]


def test_a_moved_tag_resolves_anew_while_the_old_digest_still_pulls_the_old_bytes(
        images: Images, image_tmp: Path) -> None:
    moving = f"{images.registry}/cairn/demo-app:moving"
    build.push(images.layout, "cairn/demo-app:v1", images.registry, as_name="cairn/demo-app:moving")
    first = resolve(moving)
    assert first == images.manifests["cairn/demo-app:v1"]
    build.push(images.layout, "cairn/demo-app:v2", images.registry, as_name="cairn/demo-app:moving")
    second = resolve(moving)
    assert second == images.manifests["cairn/demo-app:v2"] != first

    store = ImageStore(image_tmp / "store-moved")
    assert store.pull(f"{moving}@{first}") == first
    assert "APP_VERSION=v1" in _spec(store.unpack(first))["process"]["env"]
    assert store.digests() == [first]


def test_pull_and_unpack_give_a_rootfs_that_runs_the_demo_app(images: Images, image_tmp: Path) -> None:
    digest = images.manifests["cairn/demo-app:v2"]
    store = ImageStore(image_tmp / "store")
    store.pull(f"{images.registry}/cairn/demo-app:v2@{digest}")
    rootfs = store.unpack(digest)
    assert rootfs == image_tmp / "store" / "bundles" / digest[7:] / "rootfs"
    assert (rootfs / "acs" / "code" / "app.py").read_bytes() == DEMO_APP.read_bytes()
    assert not (rootfs / "acs" / "code" / "VERSION").exists()
    # umoci writes the runc bundle's spec from the image config: runc's input in issue 17.
    spec = _spec(rootfs)
    assert spec["process"]["args"] == ["python3", "/acs/code/app.py"] and spec["process"]["cwd"] == "/acs/code"
    assert "APP_VERSION=v2" in spec["process"]["env"]
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    done = subprocess.run(["chroot", str(rootfs), "/usr/bin/python3", "-c",
                           "import http.server, json, ssl, sqlite3; print(1)"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "1\n", "")
    shell = subprocess.run(["chroot", str(rootfs), "/bin/sh", "-c", "wget --help >/dev/null 2>&1; echo $?"],
                           capture_output=True, text=True, timeout=60)
    assert shell.stdout.strip() in ("0", "1")  # busybox's sh ran wget (it exits 1 on --help)


def test_a_second_unpack_is_a_no_op(images: Images, image_tmp: Path) -> None:
    digest = images.manifests["cairn/python:3.11"]
    store = ImageStore(image_tmp / "store-twice")
    store.pull(f"{images.registry}/cairn/python:3.11@{digest}")
    rootfs = store.unpack(digest)
    before = [(p, os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p in (rootfs, rootfs / "usr/bin/python3.11")]
    assert store.unpack(digest) == rootfs
    after = [(p, os.lstat(p).st_ino, os.lstat(p).st_mtime_ns) for p in (rootfs, rootfs / "usr/bin/python3.11")]
    assert after == before
    assert [p.name for p in (image_tmp / "store-twice" / "bundles").iterdir()] == [digest[7:]]
    # A pull of a digest already in the store reads nothing from the registry.
    assert store.pull(f"127.0.0.1:{_closed_port()}/cairn/python@{digest}") == digest


def test_a_missing_tag_is_permanent_and_names_the_reference(images: Images, image_tmp: Path) -> None:
    ref = f"{images.registry}/cairn/demo-app:no-such-tag"
    with pytest.raises(PermanentError) as caught:
        resolve(ref)
    assert ref in str(caught.value) and caught.value.hint
    missing = f"{images.registry}/cairn/no-such-image@sha256:{'0' * 64}"
    with pytest.raises(PermanentError) as caught:
        ImageStore(image_tmp / "store-missing").pull(missing)
    assert missing in str(caught.value)
    assert not ImageStore(image_tmp / "store-missing").digests()


def test_a_digest_the_registry_does_not_serve_for_that_name_is_permanent(images: Images, image_tmp: Path) -> None:
    # The base's digest under the demo app's name: the registry serves no such manifest there.
    wrong = f"{images.registry}/cairn/demo-app@{images.manifests['cairn/python:3.11']}"
    with pytest.raises(PermanentError):
        ImageStore(image_tmp / "store-wrong").pull(wrong)


@pytest.fixture
def lying_registry() -> Iterator[str]:
    """A registry that answers every manifest request with the same bytes, whatever the digest."""

    class Lying(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Lying)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_bytes_that_do_not_hash_to_the_digest_are_a_permanent_mismatch(lying_registry: str, image_tmp: Path) -> None:
    digest = "sha256:" + hashlib.sha256(b"the bytes we pinned").hexdigest()
    store = ImageStore(image_tmp / "store-lied-to")
    with pytest.raises(PermanentError) as caught:
        store.pull(f"{lying_registry}/cairn/python@{digest}")
    assert "digest mismatch" in str(caught.value) and digest in str(caught.value)
    assert store.digests() == []


def test_an_unreachable_registry_is_temporary(image_tmp: Path) -> None:
    port = _closed_port()
    with pytest.raises(TemporaryError) as caught:
        resolve(f"127.0.0.1:{port}/cairn/python:3.11")
    assert f"127.0.0.1:{port}" in str(caught.value) and caught.value.hint
    with pytest.raises(TemporaryError):
        ImageStore(image_tmp / "store-unreachable").pull(f"127.0.0.1:{port}/cairn/python@sha256:{'1' * 64}")


def test_pull_needs_a_digest_and_unpack_a_pulled_one(images: Images, image_tmp: Path) -> None:
    store = ImageStore(image_tmp / "store-refuse")
    with pytest.raises(ConfigError) as caught:
        store.pull(f"{images.registry}/cairn/python:3.11")
    assert caught.value.problems[0][0] == "image"
    with pytest.raises(PermanentError):
        store.unpack("sha256:" + hashlib.sha256(b"never pulled").hexdigest())
    with pytest.raises(ConfigError):
        store.unpack("sha256:../../etc")


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released: refused until reused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
