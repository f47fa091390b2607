"""Container logs: timestamped lines in size-capped, rotated files, read back with tail/follow.

Like the kubelet's json-file logs: the shim owns the writer, rotation renames ``stdout.log`` to
``stdout.log.1`` ... ``.N`` and drops the oldest, so a chatty app never fills the disk.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

BATCH_LINES = 1000
FOLLOW_POLL_S = 0.25


def stamp(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RotatingLog:
    """Appends lines to ``path``; at ``max_bytes`` the file rotates and ``keep`` old ones stay."""

    def __init__(self, path: Path, max_bytes: int, keep: int) -> None:
        self.path, self.max_bytes, self.keep = path, max_bytes, keep
        self._lock = threading.Lock()
        self.redact: Callable[[str], str] = lambda text: text
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = path.open("a", encoding="utf-8")

    def write(self, stream: str, text: str) -> None:
        with self._lock:
            self._fh.write(f"{stamp()} {stream} {self.redact(text.rstrip(chr(10)))}\n")
            self._fh.flush()
            if self._fh.tell() >= self.max_bytes:
                self._rotate()

    def _rotate(self) -> None:
        self._fh.close()
        for i in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            newer = self.path if i == 1 else self.path.with_name(f"{self.path.name}.{i - 1}")
            if newer.exists():
                os.replace(newer, older)
        self._fh = self.path.open("a", encoding="utf-8")

    def pump(self, stream: str, source: IO[bytes]) -> threading.Thread:
        """Copy ``source`` line by line into the log until it closes, on a daemon thread."""

        def run() -> None:
            for raw in iter(source.readline, b""):
                self.write(stream, raw.decode("utf-8", "replace"))
            source.close()

        thread = threading.Thread(target=run, daemon=True, name=f"log-{stream}")
        thread.start()
        return thread


def read(path: Path, *, tail: int | None = None, follow: bool = False, alive: Callable[[], bool] | None = None) -> Iterator[str]:
    """Lines of the log (rotated files first), the last ``tail`` only; ``follow`` waits for more
    until ``alive()`` turns false."""
    for batch in batches(path, tail=tail, follow=follow, alive=alive):
        yield from batch


def batches(path: Path, *, tail: int | None = None, follow: bool = False,
            alive: Callable[[], bool] | None = None) -> Iterator[list[str]]:
    """``read``'s lines in batches: what the files hold (``BATCH_LINES`` at a time), then each
    read's new complete lines. The agent streams a batch per worker-thread hop, not a line."""
    rotated = sorted(path.parent.glob(path.name + ".*"), key=lambda p: -int(p.suffix[1:]) if p.suffix[1:].isdigit() else 0)
    lines: deque[str] = deque(maxlen=tail if tail is not None else None)
    for old in rotated:
        lines.extend(old.read_text(errors="replace").splitlines())
    position = 0
    if path.exists():
        with path.open("r", errors="replace") as fh:
            lines.extend(fh.read().splitlines())
            position = fh.tell()
    held = list(lines)
    for start in range(0, len(held), BATCH_LINES):
        yield held[start:start + BATCH_LINES]
    if not follow:
        return
    while alive is None or alive():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if size < position:  # rotated: start the new file from its beginning
            position = 0
        if size > position:
            with path.open("r", errors="replace") as fh:
                fh.seek(position)
                chunk = fh.read()
                complete, _, _ = chunk.rpartition("\n")
                if complete or chunk.endswith("\n"):
                    position += len((complete + "\n").encode())
                    yield complete.splitlines()
        time.sleep(FOLLOW_POLL_S)
