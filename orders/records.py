"""Release orders as Prefect records: an order *is* a flow run, found by its tags.

Tags on every run: ``cairn``, ``kind:release`` (or ``kind:rollback``, ``kind:retry``),
``app:<app>``, ``env:<env>``, ``rev:<digest prefix>`` and ``cluster:<name>`` (a release's) once
the revision is known, and ``rollback-of:<order id>`` on rollbacks. The pause mode in force and its history live in a
Prefect Variable per order, so a switch reaches a running flow and survives a suspend.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from uuid import UUID

from cairn.blocks import api
from cairn.errors import NotFound
from cairn.orders.history import ModeRecord, OrderRun, statuses, variable_name
from cairn.orders.history import read as read_view
from cairn.plan import PauseMode
from cairn.status import ACTIVE, Status

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

REV_TAG = "rev:"
CLUSTER_TAG = "cluster:"  # the revision's cluster: a release reads both documents in one request
# Prefect's StateType values, as strings (its filters accept them): importing this module, as the
# CLI does, must not import Prefect.
ACTIVE_STATES = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
FINISHED_STATES = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]

__all__ = ["ACTIVE_STATES", "CLUSTER_TAG", "REV_TAG", "ModeRecord", "active_runs", "find_runs", "is_active", "last_completed", "last_finished",
           "read_mode", "read_order", "set_tags", "status_of", "tag_value", "tags_for", "write_mode"]


def tags_for(kind: str, app: str, env: str) -> list[str]:
    return ["cairn", f"kind:{kind}", f"app:{app}", f"env:{env}"]


def tag_value(run: FlowRun, prefix: str) -> str | None:
    return next((t[len(prefix):] for t in run.tags if t.startswith(prefix)), None)


def find_runs(*tags: str, states: list[str] | None = None, limit: int = 200, ids: list[UUID] | None = None) -> list[FlowRun]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=list(tags)))
    if states:
        flt.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=states))  # type: ignore[arg-type]
    if ids:
        flt.id = FlowRunFilterId(any_=ids)
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)


def read_order(order: str) -> FlowRun:
    """An order by its id or a unique prefix of it (as `git` takes commit prefixes), as a FlowRun
    for the paths that act on it; ``history.read`` finds it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(read_view(order).id)


def status_of(run: FlowRun) -> Status:
    return statuses([OrderRun.from_flow_run(run)])[run.id]


def active_runs(app: str, env: str, *, exclude: UUID | None = None) -> list[FlowRun]:
    """Release and rollback runs that hold the environment (not finished)."""
    runs = find_runs("cairn", f"app:{app}", f"env:{env}", states=ACTIVE_STATES)
    return [r for r in runs if r.id != exclude and ("kind:release" in r.tags or "kind:rollback" in r.tags)]


def last_completed(app: str, env: str, *, exclude: UUID | None = None) -> FlowRun | None:
    """The newest completed release or rollback of the environment: what it runs now."""
    runs = [r for r in find_runs("cairn", f"app:{app}", f"env:{env}", states=["COMPLETED"])
            if r.id != exclude and ("kind:release" in r.tags or "kind:rollback" in r.tags)]
    runs.sort(key=lambda r: r.end_time or r.expected_start_time or 0, reverse=True)
    return runs[0] if runs else None


def last_finished(app: str, env: str) -> FlowRun | None:
    runs = [r for r in find_runs("cairn", f"app:{app}", f"env:{env}", states=FINISHED_STATES)
            if "kind:release" in r.tags or "kind:rollback" in r.tags]
    # By creation, not end time: a run cancelled before it started has no end time, and orders
    # of one environment are created one after another, so creation order is their order.
    runs.sort(key=lambda r: r.created.timestamp() if r.created else 0.0, reverse=True)
    return runs[0] if runs else None


def set_tags(run_id: UUID, tags: list[str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if set(tags) - set(run.tags):
            client.update_flow_run(run_id, tags=sorted(set(run.tags) | set(tags)))


# --- the pause mode in force, with who switched it and when -------------------------------------

def read_mode(order_id: UUID | str, default: PauseMode) -> ModeRecord:
    # Straight over the REST API (``cairn.blocks.api``), not Prefect's Variable: a release reads it
    # at every batch boundary, between one batch's health and the next one's start.
    try:
        value = api.get(f"variables/name/{variable_name(order_id)}", "pause mode variable").get("value")
    except NotFound:
        value = None
    if not value:
        return ModeRecord(default, [])
    return ModeRecord(PauseMode(value["pause_mode"]), list(value.get("history", [])))


def write_mode(order_id: UUID | str, mode: PauseMode, *, by: str, why: str, default: PauseMode) -> ModeRecord:
    from prefect.variables import Variable

    record = read_mode(order_id, default)
    history = record.history + [{"pause_mode": str(mode), "by": by, "at": time.time(), "why": why}]
    Variable.set(variable_name(order_id), {"pause_mode": str(mode), "history": history}, overwrite=True)
    return ModeRecord(mode, history)


def is_active(run: FlowRun) -> bool:
    return status_of(run) in ACTIVE


def close_run(run_id: UUID, timeout_s: float = 60) -> None:
    """Cancel a release's flow run and wait until it is final. A suspended or scheduled run has no
    process to stop, so it goes straight to Cancelled; a running or hot-paused one is cancelled by
    its worker (Cancelling first). Instances are left as they are."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled, Cancelling

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
