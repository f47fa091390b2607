"""Rollback: return every instance of an environment to the last completed revision, batch by batch."""

from __future__ import annotations

import time
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.states import Cancelled, Cancelling

from cairn.errors import NotFound
from cairn.flows import orders
from cairn.flows.engine import current_run, drive
from cairn.flows.release import revision_of_run
from cairn.plan import PauseMode


def close_run(run_id: Any, timeout_s: float = 60) -> None:
    """Cancel a release's flow run and wait until it is final. A suspended or scheduled run has no
    process to stop, so it goes straight to Cancelled; a running or hot-paused one is cancelled by
    its worker (Cancelling first). Instances are left as they are."""
    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + timeout_s
        settled_since: float | None = None
        while time.monotonic() < deadline:
            state = client.read_flow_run(run_id).state
            if state is None or state.is_final():
                # A worker that was just starting the run may still move it on: it is closed once
                # it stays final for a moment.
                settled_since = settled_since or time.monotonic()
                if time.monotonic() - settled_since > 1.5:
                    return
            else:
                settled_since = None
                no_process = state.is_scheduled() or (state.is_paused() and state.name == "Suspended")
                if not state.is_cancelling() or no_process:
                    client.set_flow_run_state(run_id, Cancelled() if no_process else Cancelling(), force=True)
            time.sleep(0.2)
        # The worker did not confirm in time (it may be gone): the order is closed all the same.
        client.set_flow_run_state(run_id, Cancelled(), force=True)


@flow(name="rollback", flow_run_name="rollback-{app}-{environment}", persist_result=True)
def rollback(app: str, environment: Literal["production", "test"], order: str | None = None, batches: int = 2) -> dict[str, Any]:
    """Close the active order (if any) and ship the revision of the last completed order again."""
    run_id, _ = current_run()
    logger = get_run_logger()
    for active in orders.active_runs(app, environment, exclude=run_id):
        if "kind:release" in active.tags:
            logger.info("closing active order %s before rolling back", active.id)
            close_run(active.id)
    exclude = None
    if order:
        exclude = orders.read_order(order).id
    else:
        latest = orders.find_runs("cairn", "kind:release", f"app:{app}", f"env:{environment}", limit=1)
        exclude = latest[0].id if latest else None
    previous = orders.last_completed(app, environment, exclude=exclude)
    revision = revision_of_run(previous.tags) if previous else None
    if revision is None:
        raise NotFound(f"{app}/{environment} has no completed order to roll back to", hint="a rollback needs an earlier completed release")
    tags = [*orders.tags_for("rollback", app, environment), f"{orders.REV_TAG}{revision.digest[:32]}"]
    if exclude:
        tags.append(f"rollback-of:{exclude}")
    orders.set_tags(run_id, tags)
    logger.info("rolling %s %s back to %s (revision %s)", app, environment, revision.version, revision.short)
    return drive(revision, min(batches, revision.spec.instances), PauseMode.NONE, hot_pause_s=0, suspend_timeout_s=86400,
                 title=f"rollback {app} {environment} -> {revision.version}")
