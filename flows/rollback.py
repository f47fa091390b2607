"""Rollback: return every instance of an environment to the last completed revision, batch by batch."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from cairn.config import EnvironmentName
from cairn.errors import NotFound
from cairn.flows.engine import current_run, drive
from cairn.orders import records, tags
from cairn.orders.records import close_run
from cairn.orders.revisions import revision_of_run
from cairn.plan import PauseMode
from cairn.tasks.report import flush_finished


@flow(name="rollback", flow_run_name="rollback-{app}-{environment}", persist_result=True, on_completion=[flush_finished], on_failure=[flush_finished])
def rollback(app: str, environment: EnvironmentName, order: str | None = None, batches: int = 2) -> dict[str, Any]:
    """Close the active order (if any) and ship the revision of the last completed order again."""
    run_id, _ = current_run()
    logger = get_run_logger()
    for active in records.active_runs(app, environment, exclude=run_id):
        if f"{tags.KIND}release" in active.tags:
            logger.info("closing active order %s before rolling back", active.id)
            close_run(active.id)
    exclude = None
    if order:
        exclude = records.read_order(order).id
    else:
        latest = records.find_runs(*tags.for_kind("release", app, environment), limit=1)
        exclude = latest[0].id if latest else None
    previous = records.last_completed(app, environment, exclude=exclude)
    revision = revision_of_run(previous.tags) if previous else None
    if revision is None:
        raise NotFound(f"{app}/{environment} has no completed order to roll back to", hint="a rollback needs an earlier completed release")
    wanted = [*tags.for_kind("rollback", app, environment), *tags.for_revision(revision.digest, revision.spec.cluster)]
    if exclude:
        wanted.append(f"{tags.ROLLBACK_OF}{exclude}")
    records.set_tags(run_id, wanted)
    logger.info("rolling %s %s back to %s (revision %s)", app, environment, revision.version, revision.short)
    return drive(revision, min(batches, revision.spec.instances), PauseMode.NONE, hot_pause_s=0, suspend_timeout_s=86400,
                 title=f"rollback {app} {environment} -> {revision.version}")
