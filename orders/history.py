"""Release orders read for people (`cairn release list/show/wait`): a page of orders costs a fixed
number of queries, whatever its length, and nothing here imports Prefect.

An order's status needs the rollback runs that target it, and its pause mode a Prefect Variable.
Read one order at a time, a page of 50 was 100 extra round trips; here a page is three queries:
the runs, every rollback of any of them (a tag filter with ``any_``), every Variable of any of
them (a name filter with ``any_``). The queries go to the REST API (``cairn.blocks.api``), since
importing Prefect alone costs more than the whole answer may take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from cairn.blocks import api
from cairn.errors import NotFound
from cairn.orders import tags
from cairn.orders.tags import ROLLBACK_OF
from cairn.plan import PauseMode
from cairn.status import Status, rollback_status, status_from_state

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

PAGE = 200  # the most one /filter request returns (the server's default limit)


@dataclass(frozen=True)
class OrderRun:
    """The parts of an order's flow run that people are shown."""

    id: UUID
    name: str
    tags: tuple[str, ...]
    parameters: dict[str, Any]
    state_type: str  # Prefect's StateType value: "COMPLETED", "PAUSED", ...
    state_name: str | None
    message: str | None
    created: datetime | None
    ended: datetime | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> OrderRun:
        state = doc.get("state") or {}
        created, ended = doc.get("created"), doc.get("end_time")
        return cls(UUID(doc["id"]), doc["name"], tuple(doc.get("tags") or ()), dict(doc.get("parameters") or {}),
                   state.get("type") or doc.get("state_type") or "SCHEDULED", state.get("name") or doc.get("state_name"),
                   state.get("message"), datetime.fromisoformat(created) if created else None,
                   datetime.fromisoformat(ended) if ended else None)

    @classmethod
    def from_flow_run(cls, run: FlowRun) -> OrderRun:
        """For the paths that already hold a Prefect FlowRun (create, resume, close)."""
        state = run.state
        return cls(run.id, run.name, tuple(run.tags), dict(run.parameters or {}), state.type.value if state else "SCHEDULED",
                   state.name if state else None, state.message if state else None, run.created, run.end_time)

    def tag(self, prefix: str) -> str | None:
        return tags.value(self.tags, prefix)

    @property
    def default_mode(self) -> PauseMode:
        return PauseMode(self.parameters.get("pause_mode", "first_batch"))


@dataclass(frozen=True)
class ModeRecord:
    mode: PauseMode
    history: list[dict[str, Any]]


def variable_name(order_id: UUID | str) -> str:
    """The Prefect Variable holding an order's pause mode in force and who switched it when."""
    return f"cairn_order_{UUID(str(order_id)).hex}"


def _filter(tags: Sequence[str], any_tags: Sequence[str] | None, states: Sequence[str] | None) -> dict[str, Any]:
    flt: dict[str, Any] = {"tags": {"all_": list(tags)}}
    if any_tags is not None:
        flt["tags"]["any_"] = list(any_tags)
    if states is not None:
        flt["state"] = {"type": {"any_": list(states)}}
    return flt


def find(*tags: str, limit: int = 50, offset: int = 0, any_tags: Sequence[str] | None = None,
         states: Sequence[str] | None = None) -> list[OrderRun]:
    """Runs carrying every tag (and one of ``any_tags``), in one of ``states`` (Prefect's StateType
    values) if given, newest first: the server filters, in one query per 200 runs."""
    out: list[OrderRun] = []
    while len(out) < limit:
        size = min(PAGE, limit - len(out))
        docs = api.post("flow_runs/filter", {"flow_runs": _filter(tags, any_tags, states), "sort": "EXPECTED_START_TIME_DESC",
                                             "limit": size, "offset": offset + len(out)}, "flow runs")
        out += [OrderRun.from_json(d) for d in docs]
        if len(docs) < size:
            break
    return out


def read(order: str) -> OrderRun:
    """An order by its id or a unique prefix of it (as `git` takes commit prefixes)."""
    try:
        run_id: UUID | None = UUID(order)
    except ValueError:
        run_id = None
    if run_id is not None:
        try:
            run = OrderRun.from_json(api.get(f"flow_runs/{run_id}", f"flow run {run_id}"))
            if f"{tags.KIND}release" in run.tags:
                return run
        except NotFound:
            pass
    matches: dict[UUID, OrderRun] = {}
    if len(order) >= 4:
        # Prefect filters ids by equality only, so a prefix is matched here, a page at a time, over
        # the whole history: an order older than the newest page must be found too.
        prefix, offset = order.lower(), 0
        while True:
            page = find(tags.CAIRN, f"{tags.KIND}release", limit=PAGE, offset=offset)
            matches.update({r.id: r for r in page if str(r.id).startswith(prefix)})
            if len(page) < PAGE:
                break
            offset += PAGE
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        raise NotFound(f"no release order {order!r}", hint="cairn release list shows the orders")
    raise NotFound(f"{order!r} matches {len(matches)} orders", hint="give more characters of the id")


def statuses(runs: Sequence[OrderRun]) -> dict[UUID, Status]:
    """Each run's status: its own state, unless a rollback run targets it (one query for all)."""
    out = {r.id: status_from_state(r.state_type, r.state_name) for r in runs}
    releases = [r.id for r in runs if f"{tags.KIND}release" in r.tags]
    rollbacks: dict[UUID, list[OrderRun]] = {}
    for start in range(0, len(releases), PAGE):
        wanted = [f"{ROLLBACK_OF}{i}" for i in releases[start:start + PAGE]]
        for rollback in find(tags.CAIRN, f"{tags.KIND}rollback", limit=10 * PAGE, any_tags=wanted):
            target = rollback.tag(ROLLBACK_OF)
            if target:
                rollbacks.setdefault(UUID(target), []).append(rollback)
    for order_id, found in rollbacks.items():
        # Newest first (find's order): the latest rollback that counts decides.
        derived = next((s for s in (rollback_status(r.state_type) for r in found) if s is not None), None)
        if derived is not None and order_id in out:
            out[order_id] = derived
    return out


def modes(runs: Sequence[OrderRun]) -> dict[UUID, ModeRecord]:
    """Each run's pause mode in force and its history (one query for all the runs' Variables)."""
    out = {r.id: ModeRecord(r.default_mode, []) for r in runs}
    by_name = {variable_name(r.id): r.id for r in runs}
    names = list(by_name)
    for start in range(0, len(names), PAGE):
        chunk = names[start:start + PAGE]
        for var in api.post("variables/filter", {"variables": {"name": {"any_": chunk}}, "limit": len(chunk)}, "variables"):
            value = var.get("value")
            if value:
                out[by_name[var["name"]]] = ModeRecord(PauseMode(value["pause_mode"]), list(value.get("history", [])))
    return out
