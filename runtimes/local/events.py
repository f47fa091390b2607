"""Instance events, one JSON line each in the environment's ``events.jsonl``.

The file lives beside the instances, not inside one, so events outlive the instance they
describe (a terminated instance's Stopped event stays readable). Several shims append to one
file: each event is one ``write`` on an ``O_APPEND`` descriptor, which the kernel keeps whole.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from cairn.runtime import Event

WARNING_REASONS = frozenset({"PostStartFailed", "Unhealthy", "OOMKilled", "BackOff", "Failed", "FailedPreStop"})


def record(path: Path, instance: str, reason: str, message: str, *, warning: bool | None = None) -> Event:
    kind = "Warning" if (reason in WARNING_REASONS if warning is None else warning) else "Normal"
    event = Event(time=time.time(), instance=instance, reason=reason, message=message, type=kind)
    line = (json.dumps(event.to_dict(), sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def read(path: Path, *, instance: str | None = None, since: float | None = None) -> list[Event]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    events: list[Event] = []
    for line in lines:
        try:
            event = Event(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # a line cut by a crash mid-write is skipped, not fatal
        if (instance is None or event.instance == instance) and (since is None or event.time >= since):
            events.append(event)
    return sorted(events, key=lambda e: e.time)
