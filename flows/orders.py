"""Release orders as Prefect records: an order *is* a flow run, found by its tags.

Tags on every run: ``cairn``, ``kind:release`` (or ``kind:rollback``, ``kind:retry``),
``app:<app>``, ``env:<env>``, ``rev:<digest prefix>`` once the revision is known, and
``rollback-of:<order id>`` on rollbacks. The pause mode in force and its history live in a
Prefect Variable per order, so a switch reaches a running flow and survives a suspend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.variables import Variable

from cairn.errors import NotFound
from cairn.plan import PauseMode
from cairn.status import ACTIVE, Status, rollback_status, status_from_state

REV_TAG = "rev:"
ACTIVE_STATES = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]


def tags_for(kind: str, app: str, env: str) -> list[str]:
    return ["cairn", f"kind:{kind}", f"app:{app}", f"env:{env}"]


def tag_value(run: FlowRun, prefix: str) -> str | None:
    return next((t[len(prefix):] for t in run.tags if t.startswith(prefix)), None)


def find_runs(*tags: str, states: list[StateType] | None = None, limit: int = 200, ids: list[UUID] | None = None) -> list[FlowRun]:
    flt = FlowRunFilter(tags=FlowRunFilterTags(all_=list(tags)))
    if states:
        flt.state = FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
    if ids:
        flt.id = FlowRunFilterId(any_=ids)
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)


def read_order(order: str) -> FlowRun:
    """An order by its id or a unique prefix of it (as `git` takes commit prefixes)."""
    from prefect.exceptions import ObjectNotFound

    try:
        run_id: UUID | None = UUID(order)
    except ValueError:
        run_id = None
    if run_id is not None:
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(run_id)
            if "kind:release" in run.tags:
                return run
        except ObjectNotFound:
            pass
    matches = [r for r in find_runs("cairn", "kind:release", limit=200) if str(r.id).startswith(order.lower())] if len(order) >= 4 else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"no release order {order!r}", hint="cairn release list shows the orders")
    raise NotFound(f"{order!r} matches {len(matches)} orders", hint="give more characters of the id")


def rollbacks_of(order_id: UUID) -> list[FlowRun]:
    return find_runs("cairn", "kind:rollback", f"rollback-of:{order_id}", limit=10)


def status_of(run: FlowRun) -> Status:
    state = run.state
    own = status_from_state(state.type.value if state else "SCHEDULED", state.name if state else None)
    if "kind:release" in run.tags:
        for rollback in rollbacks_of(run.id):
            derived = rollback_status(rollback.state.type.value if rollback.state else "SCHEDULED")
            if derived is not None:
                return derived
    return own


def active_runs(app: str, env: str, *, exclude: UUID | None = None) -> list[FlowRun]:
    """Release and rollback runs that hold the environment (not finished)."""
    runs = find_runs("cairn", f"app:{app}", f"env:{env}", states=ACTIVE_STATES)
    return [r for r in runs if r.id != exclude and ("kind:release" in r.tags or "kind:rollback" in r.tags)]


def last_completed(app: str, env: str, *, exclude: UUID | None = None) -> FlowRun | None:
    """The newest completed release or rollback of the environment: what it runs now."""
    runs = [r for r in find_runs("cairn", f"app:{app}", f"env:{env}", states=[StateType.COMPLETED])
            if r.id != exclude and ("kind:release" in r.tags or "kind:rollback" in r.tags)]
    runs.sort(key=lambda r: r.end_time or r.expected_start_time or 0, reverse=True)
    return runs[0] if runs else None


def last_finished(app: str, env: str) -> FlowRun | None:
    finished = [StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED]
    runs = [r for r in find_runs("cairn", f"app:{app}", f"env:{env}", states=finished)
            if "kind:release" in r.tags or "kind:rollback" in r.tags]
    # By creation, not end time: a run cancelled before it started has no end time, and orders
    # of one environment are created one after another, so creation order is their order.
    runs.sort(key=lambda r: r.created.timestamp() if r.created else 0.0, reverse=True)
    return runs[0] if runs else None


def set_tags(run_id: UUID, tags: list[str]) -> None:
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        if set(tags) - set(run.tags):
            client.update_flow_run(run_id, tags=sorted(set(run.tags) | set(tags)))


# --- the pause mode in force, with who switched it and when -------------------------------------

def _variable(order_id: UUID | str) -> str:
    return f"cairn_order_{UUID(str(order_id)).hex}"


@dataclass(frozen=True)
class ModeRecord:
    mode: PauseMode
    history: list[dict[str, Any]]


def read_mode(order_id: UUID | str, default: PauseMode) -> ModeRecord:
    value = Variable.get(_variable(order_id), default=None)
    if not value:
        return ModeRecord(default, [])
    return ModeRecord(PauseMode(value["pause_mode"]), list(value.get("history", [])))


def write_mode(order_id: UUID | str, mode: PauseMode, *, by: str, why: str, default: PauseMode) -> ModeRecord:
    record = read_mode(order_id, default)
    history = record.history + [{"pause_mode": str(mode), "by": by, "at": time.time(), "why": why}]
    Variable.set(_variable(order_id), {"pause_mode": str(mode), "history": history}, overwrite=True)
    return ModeRecord(mode, history)


def is_active(run: FlowRun) -> bool:
    return status_of(run) in ACTIVE
