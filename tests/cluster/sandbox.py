#!/usr/bin/env python3
"""The pod sandbox image, built locally and imported into the node's containerd with ctr.

    cairn.local/pause:1.0   one layer: the static pause binary build.sh compiles, at /pause

The sandbox is the one image the cluster itself needs: containerd starts one per pod before any
app image is pulled, and the cluster comes up before (and without) the test session's registry,
whose port is random. So it stays a docker-archive imported with `ctr images import`, not a
pull. App images (cairn/python, cairn/demo-app) are cairn.images.build's, pulled by containerd
from the registry the test session starts (registries.py): one image builder for both runtimes.

The layer is written reproducibly (sorted entries, fixed mtimes, root owner) so the same binary
gives the same digest and `up` can skip a re-import. Python 3.11 standard library only: it runs
before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import shutil
import sys
import tarfile

from layout import PAUSE_IMAGE

EPOCH = 0


def log(msg: str) -> None:
    print(f"[sandbox] {msg}", file=sys.stderr, flush=True)


def _layer(pause_bin: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(str(pause_bin), arcname="pause")
        info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = EPOCH, 0, 0, "", "", 0o755
        with open(pause_bin, "rb") as fh:
            tar.addfile(info, fh)
    return buf.getvalue()


def write_archive(out: pathlib.Path, tag: str, layer: bytes, config: dict) -> None:
    """A docker-archive (docker save format) with one uncompressed layer."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    cfg = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/sandbox.py"}],
    }
    cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": [layer_name]}]).encode()
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in ((cfg_name, cfg_bytes), (layer_name, layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def input_key(pause_bin: pathlib.Path) -> str:
    """Changes whenever anything that goes into the image changes."""
    h = hashlib.sha256()
    for p in (pathlib.Path(__file__), pause_bin):
        h.update(p.read_bytes() if p.exists() else b"missing")
    return h.hexdigest()[:16]


def build(out_dir: pathlib.Path, pause_bin: pathlib.Path) -> pathlib.Path:
    """The pause image's archive under ``out_dir/<input key>/``, built when missing."""
    key = input_key(pause_bin)
    archive = out_dir / key / "pause.tar"
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    write_archive(archive, PAUSE_IMAGE, _layer(pause_bin), {"Entrypoint": ["/pause"], "WorkingDir": "/"})
    log(f"{PAUSE_IMAGE}: {archive} ({archive.stat().st_size // 1024} KiB)")
    for old in out_dir.iterdir():  # archives of older inputs (and the old app images) are never used again
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    return archive


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/var/cache/cairn-k8s/images"))
    ap.add_argument("--pause-bin", type=pathlib.Path, default=pathlib.Path("/var/cache/cairn-k8s/pause/bin/pause"))
    args = ap.parse_args()
    print(f"{PAUSE_IMAGE}\t{build(args.out, args.pause_bin)}")


if __name__ == "__main__":
    main()
