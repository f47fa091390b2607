"""Container logs: timestamped lines in size-capped, rotated files, read back with tail/follow.

Like the kubelet's container logs: the shim (shim.c) writes ``<RFC 3339 time> <stream> <line>``
with every secret value masked, and rotates at the size limit, renaming ``container.log`` to
``container.log.1`` ... ``.N`` and dropping the oldest, so a chatty app never fills the disk.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

BATCH_LINES = 1000
FOLLOW_POLL_S = 0.25


def stamp(now: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def append_line(path: Path, stream: str, text: str) -> None:
    """One line in the shim's format, appended whole (one ``write`` on ``O_APPEND``: the shim
    appends to the same file), for what the agent adds: lines of the app's log files."""
    line = f"{stamp()} {stream} {text.rstrip(chr(10))}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


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
