"""The order's artifacts: one table of batches and instances, one progress bar, updated in place.

Both are found again by key and flow run, so a flow that re-runs from the top after a suspend
keeps updating the same two artifacts instead of adding new ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from uuid import UUID

from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
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


def _find(flow_run_id: UUID, key: str, kind: str) -> UUID | None:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
                type=ArtifactFilterType(any_=[kind]),
            ),
            limit=1,
        )
    return found[0].id if found else None


class OrderReport:
    """The order's two artifacts, written only when what they show changed. Their ids are found
    once per process (a re-run after a suspend finds the same artifacts by key and flow run)."""

    def __init__(self, flow_run_id: UUID, plan: ReleasePlan, revision: Revision, title: str) -> None:
        self.flow_run_id, self.plan, self.revision, self.title = flow_run_id, plan, revision, title
        self.key = f"order-{flow_run_id.hex[:16]}"
        self.table_id = _find(flow_run_id, self.key, "table")
        self.progress_id = _find(flow_run_id, f"{self.key}-progress", "progress")
        self.shown: list[dict[str, str]] | None = None

    def update(self, instances: Sequence[Instance]) -> float:
        rows = table_rows(self.plan, instances, self.revision)
        done = sum(1 for r in rows if r["state"] == "done")
        progress = round(100.0 * done / max(1, len(rows)), 1)
        if rows == self.shown:
            return progress
        if self.table_id is None:
            self.table_id = create_table_artifact(rows, key=self.key, description=self.title)
        else:
            with get_client(sync_client=True) as client:
                client.update_artifact(self.table_id, ArtifactUpdate(data=json.dumps(rows), description=self.title))
        if self.progress_id is None:
            self.progress_id = create_progress_artifact(progress, key=f"{self.key}-progress", description=f"{self.title}: instances done")
        else:
            update_progress_artifact(self.progress_id, progress)
        self.shown = rows
        return progress
