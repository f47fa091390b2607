"""The order's artifacts: one table of batches and instances, one progress bar, updated in place.

Both are found again by key and flow run, so a flow that re-runs from the top after a suspend
keeps updating the same two artifacts instead of adding new ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import UUID

from prefect.artifacts import create_progress_artifact, create_table_artifact
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactUpdate
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, ArtifactFilterType

from cairn.plan import ReleasePlan
from cairn.revision import Revision
from cairn.runtime import Instance


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
                "instance": i.name if i else f"{revision.app}-{revision.environment}-{slot}",
                "revision": (i.revision[:12] if i else "-"),
                "state": state,
                "restarts": str(i.restarts if i else 0),
                "reason": (i.reason or "") if i else "",
            })
    return rows


def _find(client: SyncPrefectClient, flow_run_id: UUID, keys: dict[str, str]) -> dict[str, UUID]:
    """key -> artifact id, for those of ``keys`` (key -> type) this flow run has already."""
    found = client.read_artifacts(
        artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=list(keys)),
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            type=ArtifactFilterType(any_=sorted(set(keys.values()))),
        ),
    )
    return {a.key: a.id for a in found if a.key in keys and a.type == keys[a.key]}


class OrderReport:
    """The order's two artifacts, written only when what they show changed. Their ids are found
    once per process, at the first update (a re-run after a suspend finds the same artifacts by
    key and flow run)."""

    def __init__(self, flow_run_id: UUID, plan: ReleasePlan, revision: Revision, title: str) -> None:
        self.flow_run_id, self.plan, self.revision, self.title = flow_run_id, plan, revision, title
        self.key = f"order-{flow_run_id.hex[:16]}"
        self.table_id: UUID | None = None
        self.progress_id: UUID | None = None
        self.found = False  # looked up at the first update, which comes after the first batch's dispatch
        self.shown: list[dict[str, str]] | None = None

    def update(self, instances: Sequence[Instance]) -> float:
        rows = table_rows(self.plan, instances, self.revision)
        done = sum(1 for r in rows if r["state"] == "done")
        progress = round(100.0 * done / max(1, len(rows)), 1)
        if rows == self.shown:
            return progress
        progress_key = f"{self.key}-progress"
        # One client (one connection) for the lookup and both writes: this runs between batches.
        with get_client(sync_client=True) as client:
            if not self.found:
                ids = _find(client, self.flow_run_id, {self.key: "table", progress_key: "progress"})
                self.table_id, self.progress_id = ids.get(self.key), ids.get(progress_key)
                self.found = True
            if self.table_id is not None:
                client.update_artifact(self.table_id, ArtifactUpdate(data=json.dumps(rows), description=self.title))
            if self.progress_id is not None:
                client.update_artifact(self.progress_id, ArtifactUpdate(data=progress))
        if self.table_id is None:
            self.table_id = create_table_artifact(rows, key=self.key, description=self.title)
        if self.progress_id is None:
            self.progress_id = create_progress_artifact(progress, key=progress_key, description=f"{self.title}: instances done")
        self.shown = rows
        return progress
