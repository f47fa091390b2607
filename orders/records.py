"""Release orders as Prefect records: an order *is* a flow run, found by its tags (``tags``).

This module finds and changes those records: the runs of an environment, an order by its id or
a prefix of it, its tags, closing it. The pause mode in force and its history live in a Prefect
Variable per order, so a switch reaches a running flow and survives a suspend.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID

from cairn.blocks import api
from cairn.errors import NotFound
from cairn.orders import tags
from cairn.orders.history import ModeRecord, OrderRun, statuses, variable_name
from cairn.orders.history import find as find_views
from cairn.orders.history import read as read_view
from cairn.plan import PauseMode
from cairn.status import ACTIVE, Status

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

# Prefect's StateType values, as strings (its filters accept them): importing this module, as the
# CLI does, must not import Prefect.
ACTIVE_STATES = ["SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"]
FINISHED_STATES = ["COMPLETED", "FAILED", "CANCELLED", "CRASHED"]

__all__ = ["ACTIVE_STATES", "FINISHED_STATES", "ModeRecord", "active_runs", "close_run", "deployment_id", "find_runs", "is_active", "last_completed",
           "last_finished", "read_mode", "read_order", "set_tags", "status_of", "write_mode"]


def find_runs(*with_tags: str, states: list[str] | None = None, limit: int = 200, ids: list[UUID] | None = None) -> list[FlowRun]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=list(with_tags)))
    if states:
        flt.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
    if ids:
        flt.id = FlowRunFilterId(any_=ids)
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)


def deployment_id(name: str) -> UUID:
    """The id of cairn's deployment ``name`` (``release``, ``rollback``, ``retry``, ``build``)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"{name}/{name}").id
        except ObjectNotFound:
            raise NotFound(f"the {name!r} deployment does not exist", hint="start the platform with `cairn up`") from None


def read_order(order: str) -> FlowRun:
    """An order by its id or a unique prefix of it (as `git` takes commit prefixes), as a FlowRun
    for the paths that act on it; ``history.read`` finds it."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(read_view(order).id)


def status_of(run: FlowRun) -> Status:
    return statuses([OrderRun.from_flow_run(run)])[run.id]


def _of_environment(app: str, env: str, states: list[str], exclude: UUID | None = None) -> list[OrderRun]:
    """The releases and rollbacks of ``app``/``env`` in ``states``: the runs that change its instances.
    Over cairn's kept-alive connection (``history.find``), not a Prefect client: every order's flow
    asks this before its first batch (``rules.take_turn``), and making a client costs ~25 ms of CPU."""
    runs = find_views(tags.CAIRN, f"{tags.APP}{app}", f"{tags.ENV}{env}", states=states, limit=200)
    return [r for r in runs if r.id != exclude and tags.holds_environment(r.tags)]


def active_runs(app: str, env: str, *, exclude: UUID | None = None) -> list[OrderRun]:
    """Release and rollback runs that hold the environment (not finished)."""
    return _of_environment(app, env, ACTIVE_STATES, exclude)


def last_completed(app: str, env: str, *, exclude: UUID | None = None) -> OrderRun | None:
    """The newest completed release or rollback of the environment: what it runs now."""
    runs = _of_environment(app, env, ["COMPLETED"], exclude)
    runs.sort(key=lambda r: _timestamp(r.ended or r.created), reverse=True)
    return runs[0] if runs else None


def last_finished(app: str, env: str) -> OrderRun | None:
    runs = _of_environment(app, env, FINISHED_STATES)
    # By creation, not end time: a run cancelled before it started has no end time, and orders
    # of one environment are created one after another, so creation order is their order.
    runs.sort(key=lambda r: _timestamp(r.created), reverse=True)
    return runs[0] if runs else None


def _timestamp(when: datetime | None) -> float:
    return when.timestamp() if when else 0.0


def set_tags(run_id: UUID, wanted: list[str]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if set(wanted) - set(run.tags):
            client.update_flow_run(run_id, tags=sorted(set(run.tags) | set(wanted)))


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
