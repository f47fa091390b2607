"""Follow a release order in the terminal with a Rich progress bar."""

from __future__ import annotations

import time

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cairn.cli.output import console
from cairn.status import Status

STOP = {Status.PAUSED, Status.COMPLETED, Status.FAILED, Status.CLOSED, Status.ROLLED_BACK}


def follow(order: str, timeout_s: float = 3600) -> int:
    from cairn.orders import actions

    deadline = time.monotonic() + timeout_s
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        bar = progress.add_task("starting", total=1)
        while time.monotonic() < deadline:
            data = actions.show(order)
            instances = data.get("instances") or []
            total = max(1, len(instances))
            done = sum(1 for i in instances if i["ready"] and data["revision"] and i["revision"].startswith(data["revision"][:12]))
            progress.update(bar, total=total, completed=done, description=f"{data['name']}: {data['status']}")
            if Status(data["status"]) in STOP:
                break
            time.sleep(0.5)
    console.print(f"order {data['id']} is {data['status']}")
    return 0 if data["status"] in ("paused", "completed", "rolled_back") else 1
