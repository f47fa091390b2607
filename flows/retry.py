"""Retry: re-deploy only the failed instances of an order, then let the order go on."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.states import AwaitingRetry

from cairn.errors import NotFound
from cairn.orders import records
from cairn.orders.revisions import revision_of_run
from cairn.runtime import Phase
from cairn.status import Status
from cairn.tasks.batch import apply_batch, observe


@flow(name="retry", flow_run_name="retry-{order}", persist_result=True)
def retry(order: str) -> dict[str, Any]:
    """Recreate the failed instances of ``order``'s revision; a failed order then resumes where it stopped."""
    logger = get_run_logger()
    run = records.read_order(order)
    revision = revision_of_run(run.tags)
    if revision is None:
        raise NotFound(f"order {order} has not snapshotted its revision yet", hint="nothing ran, so nothing failed")
    failed = [i for i in observe(revision) if i.revision == revision.digest and i.phase is Phase.FAILED]
    status = records.status_of(run)
    if failed:
        apply_batch(str(run.id), 0, [i.slot for i in failed], revision, replace_failed=True)
        logger.info("re-deployed %s", ", ".join(i.name for i in failed))
    else:
        logger.info("no failed instance: nothing to re-deploy")
    resumed = False
    if status is Status.FAILED:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, AwaitingRetry(), force=True)
        resumed = True
    return {"retried": [i.name for i in failed], "order_resumed": resumed}
