#!/usr/bin/env python3
"""Builds the test cluster's container images locally, with no registry and no pull.

Images (docker-archive tarballs that `ctr images import` reads):
  cairn/python:3.11       Debian's python3.11 + its stdlib + shared libraries, copied
                          from this host, plus busybox-static for sh/wget/ps/...
  cairn/demo-app:latest   the same rootfs with examples/demo-app/app.py at /app/app.py,
                          entrypoint `python3 /app/app.py`
  cairn.local/pause:1.0   the pod sandbox: a static pause binary from build.sh

Why copy from the host: the machine has no registry to pull from, and Debian's own
python3.11 package is already installed; copying it with exactly the libraries `ldd`
names is seconds of work, where debootstrap is minutes and a mirror dependency.

Layers are written reproducibly (sorted entries, fixed mtimes, root owner) so the same
inputs give the same image digest and `up` can skip a re-import.
Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[2]
DEMO_APP = REPO / "examples" / "demo-app" / "app.py"
PYTHON = pathlib.Path("/usr/bin/python3.11")
STDLIB = pathlib.Path("/usr/lib/python3.11")
BUSYBOX = pathlib.Path("/bin/busybox")
# Parts of the stdlib a server image never uses; leaving them out halves the size.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
               "site-packages", "dist-packages", "pydoc_data"}
EPOCH = 0

DEMO_IMAGE = "cairn/demo-app:latest"
PYTHON_IMAGE = "cairn/python:3.11"
PAUSE_IMAGE = "cairn.local/pause:1.0"


def log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def _shared_libs(binaries: list[pathlib.Path]) -> set[pathlib.Path]:
    """Every library the dynamic linker would load for these files (ldd's view)."""
    libs: set[pathlib.Path] = set()
    for b in binaries:
        out = subprocess.run(["ldd", str(b)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+)\s+\(0x", line)
            if m:
                libs.add(pathlib.Path(m.group(1)))
    return libs


def _copy_into(root: pathlib.Path, src: pathlib.Path) -> None:
    """Copy src to the same path under root, keeping the host's file symlinks.

    Directory symlinks (Debian's /lib -> usr/lib) are resolved first, and python_rootfs
    recreates them once, so each library is stored under its real directory only.
    """
    src = pathlib.Path(os.path.realpath(src.parent)) / src.name
    dst = root / src.relative_to("/")
    if dst.exists() or dst.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        target = os.readlink(src)
        os.symlink(target, dst)
        _copy_into(root, pathlib.Path(target) if os.path.isabs(target) else src.parent / target)
    else:
        shutil.copy2(src, dst)


def python_rootfs(root: pathlib.Path) -> None:
    for p in (PYTHON, BUSYBOX):
        if not p.exists():
            raise SystemExit(f"{p} is missing: apt-get install python3.11-minimal busybox-static")
    # Same merged-/usr layout as the host: /bin, /lib, /lib64 are symlinks into /usr.
    root.mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        host = pathlib.Path("/") / link
        if host.is_symlink():
            os.symlink(os.readlink(host), root / link)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "tmp", "etc", "app", "proc",
              "sys", "dev", "root", "var/tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    _copy_into(root, PYTHON)
    os.symlink("python3.11", root / "usr/bin/python3")
    shutil.copytree(STDLIB, root / STDLIB.relative_to("/"), symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP and d == str(STDLIB)])
    extensions = list((root / "usr/lib/python3.11/lib-dynload").glob("*.so"))
    for lib in sorted(_shared_libs([PYTHON, *[STDLIB / "lib-dynload" / e.name for e in extensions]])):
        _copy_into(root, lib)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for applet in applets:
        if applet != "busybox" and not (root / "bin" / applet).exists():
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/nsswitch.conf").write_text("hosts: files dns\n")


def _layer(root: pathlib.Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                path = pathlib.Path(dirpath) / name
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = EPOCH, 0, 0, "", ""
                if info.isfile():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()


def write_archive(out: pathlib.Path, tags: list[str], layer: bytes, config: dict) -> None:
    """A docker-archive (docker save format) with one uncompressed layer."""
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    cfg = {
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/image.py"}],
    }
    cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    layer_name = diff_id[7:] + "/layer.tar"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": tags, "Layers": [layer_name]}]).encode()
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for name, data in ((cfg_name, cfg_bytes), (layer_name, layer), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            tar.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def input_key(pause_bin: pathlib.Path) -> str:
    """Changes whenever anything that goes into an image changes."""
    h = hashlib.sha256()
    for p in (pathlib.Path(__file__), DEMO_APP, PYTHON, BUSYBOX, pause_bin):
        h.update(p.read_bytes() if p.exists() else b"missing")
    return h.hexdigest()[:16]


def build(out_dir: pathlib.Path, pause_bin: pathlib.Path) -> dict[str, pathlib.Path]:
    key = input_key(pause_bin)
    d = out_dir / key
    archives = {DEMO_IMAGE: d / "demo-app.tar", PYTHON_IMAGE: d / "python.tar", PAUSE_IMAGE: d / "pause.tar"}
    if all(p.exists() for p in archives.values()):
        return archives
    d.mkdir(parents=True, exist_ok=True)
    log(f"building images into {d}")
    env = ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"]
    with tempfile.TemporaryDirectory(prefix="cairn-rootfs-") as tmp:
        root = pathlib.Path(tmp) / "rootfs"
        python_rootfs(root)
        base = _layer(root)
        write_archive(archives[PYTHON_IMAGE], [PYTHON_IMAGE], base,
                      {"Env": env, "Cmd": ["python3"], "WorkingDir": "/"})
        shutil.copy2(DEMO_APP, root / "app/app.py")
        write_archive(archives[DEMO_IMAGE], [DEMO_IMAGE], _layer(root),
                      {"Env": env, "Entrypoint": ["python3", "/app/app.py"], "WorkingDir": "/app",
                       "ExposedPorts": {"8080/tcp": {}}})
        pause_root = pathlib.Path(tmp) / "pause"
        pause_root.mkdir()
        shutil.copy2(pause_bin, pause_root / "pause")
        write_archive(archives[PAUSE_IMAGE], [PAUSE_IMAGE], _layer(pause_root),
                      {"Entrypoint": ["/pause"], "WorkingDir": "/"})
    for name, p in archives.items():
        log(f"{name}: {p.stat().st_size // (1 << 20)} MiB")
    for old in out_dir.iterdir():  # images of older inputs are never used again
        if old.is_dir() and old.name != key:
            shutil.rmtree(old, ignore_errors=True)
    return archives


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path("/var/cache/cairn-k8s/images"))
    ap.add_argument("--pause-bin", type=pathlib.Path, default=pathlib.Path("/var/cache/cairn-k8s/pause/bin/pause"))
    args = ap.parse_args()
    for name, path in build(args.out, args.pause_bin).items():
        print(f"{name}\t{path}")


if __name__ == "__main__":
    main()
