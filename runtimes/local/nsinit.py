"""The first process of an instance: enter its namespaces, build its root, exec the app.

Run by the shim as ``python3 -I nsinit.py CONFIG STATUS_FD`` with the app's environment. It
imports nothing from cairn so it starts fast, and it ``exec``s the app, so the app keeps its
pid and stays the shim's child (the shim reaps it and reads its exit code).

The root is an overlay: the host's ``/`` read through, writes going to a tmpfs layer private
to the instance, like a container's writable layer. The deploy root, file mounts and directory
mounts are bind-mounted at their configured paths inside it, so the instance sees the real
paths while nothing is created on the host outside the state directory and the configured host
directories. ``STATUS_FD`` is close-on-exec: the shim reads EOF when the app has started, or an
error message when setup failed.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import sys
from typing import Any

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWNET = 0x00020000, 0x04000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags, data.encode() if data else None),
        f"mount {source} on {target}",
    )


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def build_root(cfg: dict[str, Any]) -> str:
    layer, root = str(cfg["layer"]), str(cfg["root"])
    os.makedirs(layer, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    mount("tmpfs", layer, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.makedirs(f"{layer}/upper")
    os.makedirs(f"{layer}/work")
    mount("overlay", root, "overlay", 0, f"lowerdir=/,upperdir={layer}/upper,workdir={layer}/work")
    mount("proc", _inside(root, "/proc"), "proc", MS_NOSUID | MS_NODEV)
    mount("/dev", _inside(root, "/dev"), None, MS_BIND | MS_REC)
    mount("/sys", _inside(root, "/sys"), None, MS_BIND | MS_REC)
    mount("tmpfs", _inside(root, "/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if cfg.get("rootfs"):
        shutil.copytree(cfg["rootfs"], root, dirs_exist_ok=True, symlinks=True)
    for m in cfg["mounts"]:
        target = _inside(root, m["target"])
        if m["kind"] == "file":
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if not os.path.exists(target):
                open(target, "w").close()
        else:
            os.makedirs(target, exist_ok=True)
        mount(m["source"], target, None, MS_BIND | MS_REC)
        if m.get("readonly"):
            mount(m["source"], target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    with open(_inside(root, "/etc/hostname"), "w") as fh:
        fh.write(cfg["hostname"] + "\n")
    with open(_inside(root, "/etc/hosts"), "w") as fh:
        fh.write(f"127.0.0.1 localhost\n::1 localhost\n{cfg['address']} {cfg['hostname']}\n")
    return root


def setup(cfg: dict[str, Any]) -> None:
    for path in cfg.get("cgroups", {}).values():
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    os.setsid()
    fd = os.open(cfg["netns"], os.O_RDONLY)
    _check(libc.setns(fd, CLONE_NEWNET), "setns")
    os.close(fd)
    _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    name = cfg["hostname"].encode()
    _check(libc.sethostname(name, len(name)), "sethostname")
    mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here leaks to the host
    root = build_root(cfg)
    os.chroot(root)
    os.chdir(cfg["workdir"] if os.path.isdir(cfg["workdir"]) else "/")


def main() -> None:
    cfg = json.loads(open(sys.argv[1]).read())["run"]
    status_fd = int(sys.argv[2])
    os.set_inheritable(status_fd, False)  # closed by exec: the shim's EOF means "the app started"
    try:
        setup(cfg)
    except Exception as exc:  # noqa: BLE001 - every setup failure must reach the shim as text
        os.write(status_fd, f"instance setup failed: {exc}".encode())
        os._exit(127)
    try:
        os.execvp(cfg["argv"][0], cfg["argv"])
    except OSError as exc:
        os.write(status_fd, f"cannot start {cfg['argv'][0]!r}: {exc.strerror}".encode())
        os._exit(127)


if __name__ == "__main__":
    main()
