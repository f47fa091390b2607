"""Wake the agent's long polls when an instance's files change (Linux inotify, one per agent).

A health wait asks the agent "answer when these instances differ from what I saw" instead of
asking every 50 ms. Shims report only through files (``status.json`` and ``config.json``, written
by rename; the ``retiring`` marker; instance directories made and removed), so the kernel is what
knows of a change first. One inotify descriptor (``inotify_simple``) serves the whole agent: a
thread reads it and counts changes per watched directory, and a waiter blocks until the count of
its directories moves. Where inotify is missing (not Linux, the per-user limit of instances
reached) a waiter re-reads at a short interval instead; the answer is the same, only later.
"""

from __future__ import annotations

import errno
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from inotify_simple import INotify, flags

T = TypeVar("T")

# What changes an observation: a file renamed into place (status.json, config.json), a marker or
# directory created or removed. Not MODIFY: files are never rewritten in place.
MASK = flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE | flags.DELETE | flags.DELETE_SELF | flags.ONLYDIR
FALLBACK_POLL_S = 0.05


class Watcher:
    """Change counts per watched directory, and a way to wait for them to move."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._count: dict[Path, int] = {}
        self._by_wd: dict[int, Path] = {}
        self._warned = False
        self._closed = False
        self._inotify = self._open()
        if self._inotify is not None:
            threading.Thread(target=self._read_forever, name="inotify", daemon=True).start()

    @staticmethod
    def _open() -> INotify | None:
        try:
            return INotify()
        except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
            print(f"inotify unavailable ({exc.strerror or exc}): long polls re-read every {FALLBACK_POLL_S:g}s",
                  file=sys.stderr, flush=True)
            return None

    @property
    def live(self) -> bool:
        return self._inotify is not None

    def close(self) -> None:
        """Every wait returns now, and every later one at once (the agent is stopping)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def watch(self, directories: Iterable[Path]) -> None:
        """Watch ``directories`` (idempotent: the kernel keeps one watch per directory). A missing
        directory is skipped: its parent's watch reports its creation."""
        if self._inotify is None:
            return
        for directory in directories:
            try:
                wd = self._inotify.add_watch(directory, MASK)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR) and not self._warned:
                    # E.g. fs.inotify.max_user_watches reached: waiters still see changes, a recheck later.
                    self._warned = True
                    print(f"inotify watch of {directory} failed: {exc.strerror or exc}", file=sys.stderr, flush=True)
                continue
            with self._changed:
                self._by_wd[wd] = directory

    def count(self, directories: Iterable[Path]) -> int:
        """How many changes the directories have seen: it only grows, so any change moves it."""
        with self._changed:
            return sum(self._count.get(d, 0) for d in directories)

    def wait(self, directories: Iterable[Path], seen: int, timeout_s: float) -> None:
        """Return once the directories' change count differs from ``seen``, or after ``timeout_s``."""
        paths = list(directories)
        with self._changed:
            if self._inotify is None:
                self._changed.wait_for(lambda: self._closed, timeout=min(timeout_s, FALLBACK_POLL_S))
                return
            self._changed.wait_for(lambda: self._closed or sum(self._count.get(d, 0) for d in paths) != seen,
                                   timeout=timeout_s)

    def until_changed(self, directories: Callable[[], list[Path]], read: Callable[[list[Path]], T], unless: T,
                      wait_s: float, recheck_s: float) -> T:
        """``read(directories())`` once it differs from ``unless``, or after ``wait_s``; re-read at least
        every ``recheck_s`` (for what no file shows). The directories are watched before each read,
        so a change between the read and the wait is not lost. After ``close``, the read at once."""
        deadline = time.monotonic() + wait_s
        while True:
            watched = directories()
            self.watch(watched)
            seen = self.count(watched)
            found = read(watched)
            left = deadline - time.monotonic()
            if found != unless or left <= 0 or self._closed:
                return found
            self.wait(watched, seen, min(left, recheck_s))

    def _read_forever(self) -> None:
        assert self._inotify is not None
        while True:
            events = self._inotify.read()  # blocks until the kernel has events
            with self._changed:
                for event in events:
                    if event.mask & flags.Q_OVERFLOW:  # events were lost: count a change everywhere
                        for every in self._by_wd.values():
                            self._count[every] = self._count.get(every, 0) + 1
                        continue
                    directory = self._by_wd.get(event.wd)
                    if directory is None:
                        continue
                    self._count[directory] = self._count.get(directory, 0) + 1
                    if event.mask & flags.IGNORED:  # the directory is gone, and its watch with it
                        del self._by_wd[event.wd]
                self._changed.notify_all()
