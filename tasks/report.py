"""The order's artifacts: one table of batches and instances, one progress bar, updated in place.

Both are found again by key and flow run, so a flow that re-runs from the top after a suspend
keeps updating the same two artifacts instead of adding new ones.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import get_run_logger

from cairn.blocks import api
from cairn.naming import instance_name
from cairn.plan import ReleasePlan
from cairn.revision import Revision
from cairn.runtime import Instance

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun
    from prefect.states import State


def table_rows(plan: ReleasePlan, instances: Sequence[Instance], revision: Revision) -> list[dict[str, str]]:
    by_slot = {i.slot: i for i in instances}
    rows = []
    for batch in plan.batches:
        for slot in batch.slots:
            i = by_slot.get(slot)
            on_target = i is not None and i.revision == revision.digest
            state = "absent" if i is None else ("done" if on_target and i.ready else str(i.phase) if on_target else "old revision")
            rows.append({
                "batch": str(batch.index),
                "instance": i.name if i else instance_name(revision.app, revision.environment, slot),
                "revision": (i.revision[:12] if i else "-"),
                "state": state,
                "restarts": str(i.restarts if i else 0),
                "reason": (i.reason or "") if i else "",
            })
    return rows


# Reports whose last write was left to the flow's completion hook (``flush_finished``).
_finishing: set[OrderReport] = set()


def flush_finished(flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
    """The release and rollback flows' completion (and failure) hook: write what a finished
    order's report was last handed. Prefect calls it once the final state is recorded, so the
    last table update (two API writes, 25-45 ms) no longer stands between the last healthy
    instance and the order's end, and it still happens before the run's process exits. A failed
    batch or a suspend flushes before its state instead: the table is what a person looks at then."""
    while _finishing:
        _finishing.pop().flush()


def _find(flow_run_id: UUID, keys: dict[str, str]) -> dict[str, str]:
    """key -> artifact id, for those of ``keys`` (key -> type) this flow run has already."""
    found = api.post("artifacts/filter", {"artifacts": {
        "key": {"any_": list(keys)}, "flow_run_id": {"any_": [str(flow_run_id)]}, "type": {"any_": sorted(set(keys.values()))},
    }}, "the order's artifacts")
    return {a["key"]: a["id"] for a in found if a.get("key") in keys and a.get("type") == keys[a["key"]]}


class OrderReport:
    """The order's two artifacts, kept up to date by one writer thread: ``update`` hands it the
    latest rows and returns, so no API call sits between a batch's dispatch and its health wait;
    ``flush`` waits until what was handed is written (before a pause, a failure, the end). The
    writer always writes the newest rows it was handed, so the artifacts only move forward, and
    a state overtaken while a write was in flight is skipped, never written late over a newer one.
    Their ids are found once per process, at the first write (a re-run after a suspend finds the
    same artifacts by key and flow run)."""

    def __init__(self, flow_run_id: UUID, plan: ReleasePlan, revision: Revision, title: str,
                 changes: Future[str] | None = None) -> None:
        """``changes``: the order's diff (Markdown) against what runs now, read in the background;
        the table's description starts with it, so an approver sees what they approve."""
        self.flow_run_id, self.plan, self.revision, self.title = flow_run_id, plan, revision, title
        self.changes = changes
        self.description: str | None = None
        self.key = f"order-{flow_run_id.hex[:16]}"
        self.table_id: str | None = None
        self.progress_id: str | None = None
        self.found = False  # looked up at the first write, which comes after the first batch's dispatch
        self.shown: list[dict[str, str]] | None = None  # the rows last handed to the writer
        self._changed = threading.Condition()
        self._pending: tuple[list[dict[str, str]], float] | None = None
        self._writing = False
        self._writer: threading.Thread | None = None

    def update(self, instances: Sequence[Instance]) -> float:
        rows = table_rows(self.plan, instances, self.revision)
        done = sum(1 for r in rows if r["state"] == "done")
        progress = round(100.0 * done / max(1, len(rows)), 1)
        with self._changed:
            if rows == self.shown:
                return progress
            self.shown, self._pending = rows, (rows, progress)
            if self._writer is None:
                # In this flow run's context: the artifacts are created for the run, with its client.
                context = contextvars.copy_context()
                self._writer = threading.Thread(target=context.run, args=(self._write_forever,), name="cairn-report", daemon=True)
                self._writer.start()
            self._changed.notify_all()
        return progress

    def flush(self, timeout_s: float = 30.0) -> None:
        """Return once every update so far is written (or the writer gave up on it, with a warning)."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._pending is None and not self._writing, timeout=timeout_s):
                get_run_logger().warning("the order's artifacts were not written within %.0f s; they may lag behind", timeout_s)

    def flush_on_completion(self) -> None:
        """Leave the last write to ``flush_finished`` (the flow's completion hook)."""
        _finishing.add(self)

    def _write_forever(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending is not None)
                assert self._pending is not None
                (rows, progress), self._pending, self._writing = self._pending, None, True
            try:
                self._write(rows, progress)
            except Exception as exc:  # noqa: BLE001 - the artifacts are news: the release goes on without them
                get_run_logger().warning("could not update the order's artifacts: %s: %s", type(exc).__name__, exc)
                with self._changed:
                    if self._pending is None:
                        self.shown = None  # the next update writes again
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _write(self, rows: list[dict[str, str]], progress: float) -> None:
        progress_key = f"{self.key}-progress"
        if not self.found:
            ids = _find(self.flow_run_id, {self.key: "table", progress_key: "progress"})
            self.table_id, self.progress_id = ids.get(self.key), ids.get(progress_key)
            self.found = True
        # The lookup and updates go over cairn's kept-alive connection (blocks.api): a Prefect client
        # costs ~25 ms of CPU to make, paid on every update, the last one between the last batch and
        # the end of the run.
        if self.table_id is not None:
            api.patch(f"artifacts/{self.table_id}", {"data": json.dumps(rows), "description": self._description()}, "the order's table")
        if self.progress_id is not None:
            api.patch(f"artifacts/{self.progress_id}", {"data": progress}, "the order's progress")
        if self.table_id is None:
            self.table_id = self._create("table", self.key, json.dumps(rows), self._description())
        if self.progress_id is None:
            self.progress_id = self._create("progress", progress_key, progress, f"{self.title}: instances done")

    def _description(self) -> str:
        """On the writer's thread, so waiting for the diff never holds up a batch."""
        if self.description is None:
            diff = ""
            if self.changes is not None:
                try:
                    diff = self.changes.result(timeout=30)
                except Exception as exc:  # noqa: BLE001 - the diff is news: the table goes on without it
                    get_run_logger().warning("could not compute the order's changes: %s: %s", type(exc).__name__, exc)
            self.description = f"**{self.title}**\n\n{diff}" if diff else self.title
        return self.description

    def _create(self, kind: str, key: str, data: object, description: str) -> str:
        """What Prefect's create_table_artifact / create_progress_artifact send, for this flow run."""
        made = api.post("artifacts/", {"key": key, "type": kind, "description": description, "data": data,
                                       "flow_run_id": str(self.flow_run_id)}, f"the order's {kind}")
        return str(made["id"])
