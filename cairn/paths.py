"""Checks for absolute paths inside an instance (deploy root, mounts, log files)."""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path


def absolute_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a path inside an instance, or None.

    >>> absolute_path_problem("/acs/code") is None
    True
    >>> absolute_path_problem("acs/code")
    'must be an absolute path (start with "/")'
    >>> absolute_path_problem("/acs/../etc")
    'must not contain ".." segments'
    """
    if not path.startswith("/"):
        return 'must be an absolute path (start with "/")'
    if ".." in path.split("/"):
        return 'must not contain ".." segments'
    if "\x00" in path or "\n" in path:
        return "must not contain NUL or newline characters"
    if path == "/":
        return 'must not be "/" itself'
    return None


def normalized(path: str) -> str:
    """The canonical spelling of an absolute path, so "/a//b/" and "/a/b" are one mount point."""
    return posixpath.normpath(path)


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
