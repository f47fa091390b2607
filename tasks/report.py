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


def publish(flow_run_id: UUID, plan: ReleasePlan, instances: Sequence[Instance], revision: Revision, title: str) -> float:
    """Write (or update) the table and progress artifacts; returns the share of instances done."""
    rows = table_rows(plan, instances, revision)
    done = sum(1 for r in rows if r["state"] == "done")
    progress = round(100.0 * done / max(1, len(rows)), 1)
    key = f"order-{flow_run_id.hex[:16]}"
    table_id = _find(flow_run_id, key, "table")
    if table_id is None:
        create_table_artifact(rows, key=key, description=title)
    else:
        with get_client(sync_client=True) as client:
            client.update_artifact(table_id, ArtifactUpdate(data=json.dumps(rows), description=title))
    progress_key = f"{key}-progress"
    progress_id = _find(flow_run_id, progress_key, "progress")
    if progress_id is None:
        create_progress_artifact(progress, key=progress_key, description=f"{title}: instances done")
    else:
        update_progress_artifact(progress_id, progress)
    return progress
