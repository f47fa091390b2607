"""The Python base image's root filesystem, copied from this host's Debian packages.

Debian's python3.11 (the interpreter, its standard library less the parts a server never
uses, and exactly the shared libraries ``ldd`` names for it and its extension modules) plus
busybox-static for ``sh``, ``wget``, ``ps`` and the other small tools a probe or a shell
wants. Copying is seconds of work, where debootstrap is minutes and a mirror dependency. The
test cluster's node pulls these same images from the same registry (tests/cluster/registries.py).

The inputs are the Debian packages themselves (``package_versions`` names them), so a
reproducible build means: the same package versions give the same layer bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

PYTHON = Path("/usr/bin/python3.11")
STDLIB = Path("/usr/lib/python3.11")
BUSYBOX = Path("/bin/busybox")
PACKAGES = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "busybox-static", "libc6", "libgcc-s1")
# glibc dlopen()s libgcc_s when a thread exits (pthread_exit unwinds through it): ldd cannot see
# that, and without it a threaded app dies on exit with "libgcc_s.so.1 must be installed".
DLOPENED = (Path("/lib/x86_64-linux-gnu/libgcc_s.so.1"),)
# Parts of the stdlib a server image never uses; leaving them out halves the size. config-3.11-*
# (python3.11-dev's static libpython, 25 MiB) is there only on hosts that build extensions:
# left in, the image would depend on which -dev packages the builder happens to have.
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3",
               "site-packages", "dist-packages", "pydoc_data", "config-3.11-x86_64-linux-gnu"}
ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED=1", "LANG=C.UTF-8"]


def missing_tools() -> list[str]:
    """The Debian packages to install before a build can run (empty when ready)."""
    return [pkg for path, pkg in ((PYTHON, "python3.11-minimal"), (BUSYBOX, "busybox-static"))
            if not path.exists()]


def package_versions() -> dict[str, str]:
    """The versions of the Debian packages the base is copied from: the build's real input."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *PACKAGES],
                         capture_output=True, text=True).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def mtime_of(name: str, st: os.stat_result) -> int:
    """Layer mtime rule: the stdlib's sources keep their packaged mtime, which their .pyc
    files record (Python trusts a .pyc only while the source's mtime and size match it)."""
    if name.startswith("usr/lib/python3.11/") and name.endswith(".py"):
        return int(st.st_mtime)
    return 0


def python_rootfs(root: Path) -> None:
    """Lay the base image's files out under ``root`` (which must not exist)."""
    missing = missing_tools()
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    old_umask = os.umask(0o022)  # directory modes must not depend on the caller's umask
    try:
        _lay_out(root)
    finally:
        os.umask(old_umask)


def _lay_out(root: Path) -> None:
    # Same merged-/usr layout as the host: /bin, /lib, /lib64 are symlinks into /usr.
    root.mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        host = Path("/") / link
        if host.is_symlink():
            os.symlink(os.readlink(host), root / link)
    for d in ("usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "tmp", "etc", "app", "proc",
              "sys", "dev", "root", "var/tmp", "acs/code"):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    _copy_into(root, PYTHON)
    os.symlink("python3.11", root / "usr/bin/python3")
    shutil.copytree(STDLIB, root / STDLIB.relative_to("/"), symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in STDLIB_SKIP and d == str(STDLIB)])
    extensions = sorted((STDLIB / "lib-dynload").glob("*.so"))
    for lib in sorted(_shared_libs([PYTHON, *extensions]) | {p for p in DLOPENED if p.exists()}):
        _copy_into(root, lib)
    shutil.copy2(BUSYBOX, root / "bin/busybox")
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in sorted(applets):
        if applet != "busybox" and not (root / "bin" / applet).exists():
            os.symlink("busybox", root / "bin" / applet)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (root / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc/nsswitch.conf").write_text("hosts: files dns\n")


def _shared_libs(binaries: list[Path]) -> set[Path]:
    """Every library the dynamic linker would load for these files (ldd's view), in one ldd run."""
    out = subprocess.run(["ldd", *map(str, binaries)], capture_output=True, text=True).stdout
    return {Path(match.group(1)) for match in re.finditer(r"(/\S+)\s+\(0x", out)}


def _copy_into(root: Path, src: Path) -> None:
    """Copy ``src`` to the same path under ``root``, keeping file symlinks as symlinks.

    Directory symlinks (Debian's /lib -> usr/lib) are resolved first, so each library is
    stored under its real directory once; _lay_out recreates those directory links.
    """
    src = Path(os.path.realpath(src.parent)) / src.name
    dst = root / src.relative_to("/")
    if dst.exists() or dst.is_symlink():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        target = os.readlink(src)
        os.symlink(target, dst)
        _copy_into(root, Path(target) if os.path.isabs(target) else src.parent / target)
    else:
        shutil.copy2(src, dst)
