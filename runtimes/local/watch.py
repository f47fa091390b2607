"""Wake the agent's long polls when an instance's files change (Linux inotify, one per agent).

A health wait asks the agent "answer when these instances differ from what I saw" instead of
asking every 50 ms. Shims report only through files (``status.json`` and ``config.json``, written
by rename; the ``retiring`` marker; instance directories made and removed), so the kernel is what
knows of a change first. One inotify descriptor serves the whole agent: a thread reads it and
counts changes per watched directory, and a waiter blocks until the count of its directories
moves. Where inotify is missing (not Linux, the per-user limit of instances reached) a waiter
re-reads at a short interval instead; the answer is the same, only later.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# <sys/inotify.h>
IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x8, 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_IGNORED, IN_Q_OVERFLOW, IN_ONLYDIR = 0x400, 0x8000, 0x4000, 0x1000000
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
# What changes an observation: a file renamed into place (status.json, config.json), a marker or
# directory created or removed. Not IN_MODIFY: files are never rewritten in place.
MASK = IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_ONLYDIR
EVENT = struct.Struct("iIII")  # wd, mask, cookie, len (then len bytes of name)
FALLBACK_POLL_S = 0.05


class Watcher:
    """Change counts per watched directory, and a way to wait for them to move."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count: dict[Path, int] = {}
        self._by_wd: dict[int, Path] = {}
        self._libc: ctypes.CDLL | None = None
        self._warned = False
        self._fd = self._open()
        if self._fd is not None:
            threading.Thread(target=self._read_forever, name="inotify", daemon=True).start()

    def _open(self) -> int | None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        except (OSError, AttributeError):
            return None
        if fd < 0:
            print(f"inotify unavailable ({os.strerror(ctypes.get_errno())}): long polls re-read every "
                  f"{FALLBACK_POLL_S:g}s", file=sys.stderr, flush=True)
            return None
        self._libc = libc
        return fd

    @property
    def live(self) -> bool:
        return self._fd is not None

    def watch(self, directories: Iterable[Path]) -> None:
        """Watch ``directories`` (idempotent: the kernel keeps one watch per directory). A missing
        directory is skipped: its parent's watch reports its creation."""
        if self._fd is None or self._libc is None:
            return
        for directory in directories:
            wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(directory), MASK))
            if wd < 0:
                code = ctypes.get_errno()
                if code not in (errno.ENOENT, errno.ENOTDIR) and not self._warned:
                    # E.g. fs.inotify.max_user_watches reached: waiters still see changes, a recheck later.
                    self._warned = True
                    print(f"inotify watch of {directory} failed: {os.strerror(code)}", file=sys.stderr, flush=True)
                continue
            with self._changed:
                self._by_wd[wd] = directory

    def count(self, directories: Iterable[Path]) -> int:
        """How many changes the directories have seen: it only grows, so any change moves it."""
        with self._changed:
            return sum(self._count.get(d, 0) for d in directories)

    def wait(self, directories: Iterable[Path], seen: int, timeout_s: float) -> None:
        """Return once the directories' change count differs from ``seen``, or after ``timeout_s``."""
        if self._fd is None:
            threading.Event().wait(min(timeout_s, FALLBACK_POLL_S))
            return
        paths = list(directories)
        with self._changed:
            self._changed.wait_for(lambda: sum(self._count.get(d, 0) for d in paths) != seen, timeout=timeout_s)

    def until_changed(self, directories: Callable[[], list[Path]], read: Callable[[list[Path]], T], unless: T,
                      wait_s: float, recheck_s: float) -> T:
        """``read(directories())`` once it differs from ``unless``, or after ``wait_s``; re-read at least
        every ``recheck_s`` (for what no file shows). The directories are watched before each read,
        so a change between the read and the wait is not lost."""
        deadline = time.monotonic() + wait_s
        while True:
            watched = directories()
            self.watch(watched)
            seen = self.count(watched)
            found = read(watched)
            left = deadline - time.monotonic()
            if found != unless or left <= 0:
                return found
            self.wait(watched, seen, min(left, recheck_s))

    def _read_forever(self) -> None:
        assert self._fd is not None
        while True:
            select.select([self._fd], [], [])
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                continue
            with self._changed:
                offset = 0
                while offset < len(data):
                    wd, mask, _cookie, length = EVENT.unpack_from(data, offset)
                    offset += EVENT.size + length
                    if mask & IN_Q_OVERFLOW:  # events were lost: count a change everywhere
                        for directory in self._by_wd.values():
                            self._count[directory] = self._count.get(directory, 0) + 1
                        continue
                    directory = self._by_wd.get(wd)
                    if directory is None:
                        continue
                    self._count[directory] = self._count.get(directory, 0) + 1
                    if mask & IN_IGNORED:  # the directory is gone, and its watch with it
                        del self._by_wd[wd]
                self._changed.notify_all()
