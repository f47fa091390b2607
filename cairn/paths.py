"""Path rules: absolute paths inside an instance (deploy root, mounts, log files), directories on
a node (``host_path``) and where cairn keeps its own state.

Every check reads the normalised path ("/./etc", "//etc" and "/etc/" are all "/etc"), so no
spelling slips past a rule that another spelling would meet.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterable
from pathlib import Path

# Directories an instance's mount or deploy root must not replace: mounting over them hides the
# image's own system, and over the kernel's file systems (/proc, /sys, /dev) it is a known way
# out of a container (runc's CVE-2019-19921 family), so nothing may land beneath those either.
SYSTEM_DIRS = frozenset({
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run", "/sbin", "/sys", "/usr",
    "/var", "/var/run", "/var/lib",
})
KERNEL_DIRS = ("/proc", "/sys", "/dev")
# On a node, a host_path must not expose these nor anything beneath them: the node's
# configuration, credentials, binaries and the kernel's interfaces.
HOST_SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/root", "/run", "/sbin",
                    "/sys", "/usr", "/var/run", "/var/lib", "/var/log")


def normalized(path: str) -> str:
    """The canonical spelling of an absolute path, so "/a//b/", "/a/./b" and "/a/b" are one path.

    >>> normalized("//etc/./ssh/")
    '/etc/ssh'
    """
    # posixpath keeps a leading "//" (POSIX leaves it implementation-defined); Linux reads it as "/".
    return posixpath.normpath("/" + path.lstrip("/")) if path.startswith("/") else posixpath.normpath(path)


def absolute_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a path inside an instance, or None.

    >>> absolute_path_problem("/acs/code") is None
    True
    >>> absolute_path_problem("acs/code")
    'must be an absolute path (start with "/")'
    >>> absolute_path_problem("/acs/../etc")
    'must not contain ".." segments'
    >>> absolute_path_problem("/usr/./")
    'must not be the system directory /usr; pick a directory of your own, e.g. /acs/code'
    """
    if not path.startswith("/"):
        return 'must be an absolute path (start with "/")'
    if ".." in path.split("/"):
        # Refused, not resolved: on a node with symlinks "a/.." need not be where it reads.
        return 'must not contain ".." segments'
    if any(ord(c) < 0x20 or c == "\x7f" for c in path):
        return "must not contain NUL, newline or other control characters"
    clean = normalized(path)
    if clean == "/":
        return 'must not be "/" itself'
    if clean in SYSTEM_DIRS:
        return f"must not be the system directory {clean}; pick a directory of your own, e.g. /acs/code"
    if under_any(clean, KERNEL_DIRS):
        return f"must not lie under {_top(clean, KERNEL_DIRS)}, a file system of the kernel's"
    return None


def host_path_problem(path: str, roots: Iterable[str], *, on_this_machine: bool = False) -> str | None:
    """Why ``path`` may not be a node directory mounted into an instance when the cluster allows
    ``roots``, or None. ``on_this_machine`` (a local cluster: the node is here) also follows the
    symlinks of the part of the path that exists, so a link under a root cannot point out of it.

    >>> host_path_problem("/srv/data/shop", ["/srv/data"]) is None
    True
    >>> host_path_problem("/srv/data/../../etc", ["/srv/data"])
    'must not contain ".." segments'
    >>> host_path_problem("/srv/other", []).startswith("not under an allowed root: this cluster allows no host paths")
    True
    """
    problem = host_root_problem(path)
    if problem:
        return problem
    clean = normalized(path)
    home = normalized(str(cairn_home()))
    if overlaps(clean, home) and not under_any(clean, local_host_roots()):
        # The platform's database, credentials and agent state: never an instance's to read.
        return f"must not expose cairn's own state ({home}); use a directory of the data root, {local_host_roots()[1]}"
    allowed = [normalized(r) for r in roots]
    if on_this_machine and under_any(clean, allowed):
        real = os.path.realpath(clean)
        if real != clean and not under_any(real, [os.path.realpath(r) for r in allowed]):
            return f"resolves through a symlink to {real}, which is not under an allowed root; point host_path at the real directory"
    if not under_any(clean, allowed):
        where = f"one of {', '.join(allowed)}" if allowed else None
        return (f"not under an allowed root ({where}); use a directory beneath one, or ask an administrator to add its root "
                "to the cluster's allowed_host_paths") if where else (
            "not under an allowed root: this cluster allows no host paths; an administrator lists them in the cluster's allowed_host_paths")
    return None


def host_root_problem(root: str) -> str | None:
    """Why ``root`` cannot be an allowed host-path root of a cluster, or None."""
    problem = absolute_path_problem(root)
    if problem:
        return problem
    clean = normalized(root)
    if under_any(clean, HOST_SYSTEM_DIRS):
        return f"must not lie in the node's system directory {_top(clean, HOST_SYSTEM_DIRS)}"
    return None


def under_any(path: str, roots: Iterable[str]) -> bool:
    """True when the normalised ``path`` is one of ``roots`` or lies inside one."""
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _top(path: str, roots: Iterable[str]) -> str:
    return next(r for r in roots if path == r or path.startswith(r + "/"))


def overlaps(a: str, b: str) -> bool:
    """True when one path is the other or lies inside it."""
    a, b = normalized(a), normalized(b)
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def cairn_home() -> Path:
    """Where cairn keeps its own state on this machine: ``$CAIRN_HOME``, else ``~/.cairn``.

    Holds the agent's state, the package store and the Prefect home of ``cairn up``; tests point
    it at a temporary directory so they never touch a user's state.
    """
    return Path(os.environ.get("CAIRN_HOME") or Path.home() / ".cairn")


def agent_state_dir() -> Path:
    """The local agent's state: ``$CAIRN_AGENT_STATE``, else ``$CAIRN_HOME/agent``."""
    return Path(os.environ.get("CAIRN_AGENT_STATE") or cairn_home() / "agent")


def local_host_roots() -> list[str]:
    """Where a local cluster lets host paths lie when its ``allowed_host_paths`` is unset: the
    agent's ``volumes`` directory (not its whole state, which holds other instances' files) and
    the data root, ``$CAIRN_DATA_ROOT`` (else ``$CAIRN_HOME/data``)."""
    data = os.environ.get("CAIRN_DATA_ROOT") or str(cairn_home() / "data")
    return [normalized(str(agent_state_dir() / "volumes")), normalized(data)]


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700), its parents created as needed.

    For cairn's own state (``$CAIRN_HOME``, the Prefect home): they hold the API's auth string,
    the database every secret block is in, and the sockets of the root agent and warm start server.
    An existing directory is tightened too (one an older cairn or a ``mkdir -p`` made), unless it
    is sticky: a shared directory like ``/tmp`` named by mistake is not cairn's to close."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = path.stat().st_mode
    if mode & 0o077 and not mode & stat.S_ISVTX:
        path.chmod(0o700)
    return path
