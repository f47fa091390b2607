"""What a person can do to release orders. The CLI calls these; the Prefect UI reaches the same
flows (its Run form, pause form, Retry and Cancel buttons), so both take one code path."""

from __future__ import annotations

import getpass
import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cairn.errors import ActionRefused, CairnError, Conflict, NotFound
from cairn.orders import history, records
from cairn.plan import PauseMode
from cairn.status import Action, Status, refusal

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

# Prefect is imported inside the functions that act: `cairn release show/list/wait` only read, over
# the REST API (``history``), and importing Prefect alone costs more than their whole answer.


def who() -> str:
    return os.environ.get("CAIRN_USER") or getpass.getuser()


def ui_url(run_id: Any) -> str:
    api = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    return f"{api.removesuffix('/api')}/runs/flow-run/{run_id}"


def describe(run: FlowRun) -> dict[str, Any]:
    return describe_all([history.OrderRun.from_flow_run(run)])[0]


def describe_all(runs: Sequence[history.OrderRun]) -> list[dict[str, Any]]:
    """What people see of each order; a fixed number of queries for the whole page (``history``)."""
    modes, statuses = history.modes(runs), history.statuses(runs)
    return [{
        "id": str(run.id), "name": run.name, "app": run.parameters.get("app"), "environment": run.parameters.get("environment"),
        "version": run.parameters.get("version"), "batches": run.parameters.get("batches"), "pause_mode": str(modes[run.id].mode),
        "pause_mode_history": modes[run.id].history, "status": str(statuses[run.id]), "state": run.state_name,
        "revision": run.tag(records.REV_TAG), "created": run.created.isoformat() if run.created else None, "url": ui_url(run.id),
        "message": run.message,
    } for run in runs]


def _deployment_id(name: str) -> uuid.UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(f"{name}/{name}").id
        except Exception:
            raise NotFound(f"the {name!r} deployment does not exist", hint="start the platform with `cairn up`") from None


def create_order(app: str, env: str, version: str, batches: int, mode: PauseMode, *, queue: bool = False,
                 hot_pause_s: float | None = None) -> dict[str, Any]:
    """One flow run per order, and one active order per environment, even under a race.

    The run is created with an idempotency key derived from the environment and its last
    finished order: creates racing for the same environment compute the same key, Prefect
    creates exactly one run, and every loser sees a run that does not carry its request tag."""
    from prefect.client.orchestration import get_client

    from cairn.orders.revisions import snapshot

    revision = snapshot(app, env, version)
    deployment = _deployment_id("release")
    request = uuid.uuid4().hex
    params: dict[str, Any] = {"app": app, "environment": env, "version": version, "batches": batches, "pause_mode": str(mode)}
    if hot_pause_s is not None:
        params["hot_pause_s"] = hot_pause_s
    tags = [*records.tags_for("release", app, env), f"{records.REV_TAG}{revision.digest[:32]}", f"{records.CLUSTER_TAG}{revision.spec.cluster}",
            f"request:{request}"]
    if queue:
        tags.append("queued")
    tags.append(f"by:{who()}")
    for _ in range(5):
        active = records.active_runs(app, env)
        if active and not queue:
            raise Conflict(f"{app}/{env} already has an active order {active[0].id} ({active[0].name}, {records.status_of(active[0])})",
                           hint="resume, close or wait for it; or pass --queue")
        last = records.last_finished(app, env)
        key = f"release:{app}:{env}:after:{last.id if last else 'none'}" if not queue else f"queued:{request}"
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(deployment, parameters=params, tags=tags, idempotency_key=key,
                                                         name=f"{app}-{env}-{version}")
        if f"request:{request}" in run.tags:
            return describe(run)
        if records.is_active(run):
            raise Conflict(f"{app}/{env} already has an active order {run.id} ({run.name})", hint="resume, close or wait for it")
    raise Conflict(f"{app}/{env} is changing too fast to create an order", hint="try again")


def _refuse_unless(run: FlowRun, action: Action) -> Status:
    status = records.status_of(run)
    why = refusal(status, action)
    if why:
        raise ActionRefused(f"order {run.id}: {why}")
    return status


def resume(order: str, mode: PauseMode | None = None, comment: str = "") -> dict[str, Any]:
    run = records.read_order(order)
    _refuse_unless(run, Action.RESUME)
    current = records.read_mode(run.id, PauseMode(run.parameters.get("pause_mode", "first_batch"))).mode
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        result = client.resume_flow_run(run.id, run_input={"pause_mode": str(mode or current), "comment": comment, "approved_by": who()})
    if result.status.value != "ACCEPT":
        raise ActionRefused(f"order {run.id} refused the resume: {result.details.reason if result.details else result.status.value}")
    return describe(records.read_order(str(run.id)))


def switch_pause_mode(order: str, mode: PauseMode) -> dict[str, Any]:
    run = records.read_order(order)
    _refuse_unless(run, Action.SWITCH_PAUSE_MODE)
    default = PauseMode(run.parameters.get("pause_mode", "first_batch"))
    current = records.read_mode(run.id, default).mode
    if mode is current:
        raise ActionRefused(f"order {run.id} already pauses in mode {mode}", hint=f"switch to one of {[str(m) for m in PauseMode if m is not mode]}")
    records.write_mode(run.id, mode, by=who(), why="switched", default=default)
    return describe(run)


def close(order: str) -> dict[str, Any]:
    run = records.read_order(order)
    _refuse_unless(run, Action.CLOSE)
    records.set_tags(run.id, [f"closed-by:{who()}"])
    records.close_run(run.id)
    return describe(records.read_order(str(run.id)))


def _run_and_wait(deployment: str, params: dict[str, Any], name_tags: list[str], timeout_s: float = 900) -> FlowRun:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(_deployment_id(deployment), parameters=params, tags=name_tags)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state and run.state.is_final():
                return run
            time.sleep(0.3)
    raise CairnError(f"{deployment} run {run.id} did not finish within {timeout_s:.0f}s", hint=ui_url(run.id))


def retry(order: str) -> dict[str, Any]:
    run = records.read_order(order)
    _refuse_unless(run, Action.RETRY)
    finished = _run_and_wait("retry", {"order": str(run.id)}, ["cairn", "kind:retry", f"order:{run.id}", f"by:{who()}"])
    if not (finished.state and finished.state.is_completed()):
        raise CairnError(f"retry of {run.id} failed: {finished.state.message if finished.state else '?'}", hint=ui_url(finished.id))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        result = client.read_flow_run(finished.id).state.result(raise_on_failure=False)  # type: ignore[union-attr]
    return {"order": describe(records.read_order(str(run.id))), "retry": result if isinstance(result, dict) else {}}


def rollback(order: str | None = None, app: str | None = None, env: str | None = None, wait: bool = True) -> dict[str, Any]:
    if order:
        run = records.read_order(order)
        _refuse_unless(run, Action.ROLLBACK)
        app, env = run.parameters["app"], run.parameters["environment"]
        batches = int(run.parameters.get("batches", 2))
    else:
        batches = 2
    assert app and env
    params = {"app": app, "environment": env, "order": order, "batches": batches}
    finished = _run_and_wait("rollback", params, [*records.tags_for("rollback", app, env), f"by:{who()}"])
    if not (finished.state and finished.state.is_completed()):
        raise CairnError(f"rollback failed: {finished.state.message if finished.state else '?'}", hint=ui_url(finished.id))
    return {"rollback": str(finished.id), "state": finished.state.name}


def show(order: str) -> dict[str, Any]:
    run = history.read(order)
    data = describe_all([run])[0]
    if data["revision"]:
        from cairn.blocks import documents
        from cairn.tasks.context import target

        try:
            t = target(documents.revision(data["revision"]))
            data["instances"] = [i.to_dict() for i in t.runtime.observe(t.env)]
        except CairnError as exc:
            data["instances_error"] = exc.message
    return data


def list_orders(app: str | None = None, env: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    tags = ["cairn", "kind:release"] + ([f"app:{app}"] if app else []) + ([f"env:{env}"] if env else [])
    return describe_all(history.find(*tags, limit=limit))


def wait_for(order: str, statuses: set[Status], timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = history.read(order)
        if history.statuses([run])[run.id] in statuses:
            return describe_all([run])[0]
        time.sleep(0.3)
    raise CairnError(f"order {order} did not reach {sorted(map(str, statuses))} within {timeout_s:.0f}s")


__all__ = ["close", "create_order", "list_orders", "resume", "retry", "rollback", "show", "switch_pause_mode", "wait_for"]
