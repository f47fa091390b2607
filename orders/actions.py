"""What a person can do to release orders. The CLI calls these; the Prefect UI reaches the same
flows (its Run form, pause form, Retry and Cancel buttons), so both take one code path."""

from __future__ import annotations

import getpass
import os
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cairn import sync
from cairn.errors import ActionRefused, CairnError, Conflict
from cairn.orders import history, records, rules, tags
from cairn.orders.requests import ReleaseRequest, check
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
        "revision": run.tag(tags.REV), "created": run.created.isoformat() if run.created else None, "url": ui_url(run.id),
        "message": run.message,
    } for run in runs]


def create_order(app: str, env: str, version: str, batches: int, mode: PauseMode, *, queue: bool = False,
                 hot_pause_s: float | None = None) -> dict[str, Any]:
    """One flow run per order, and one active order per environment, even under a race (``rules``).

    The request is checked first (``requests.check``: nothing is created for a bad one), then its
    revision frozen, then the run created. Every loser of a create race sees a run that does not
    carry its own ``request:`` tag."""
    from prefect.client.orchestration import get_client

    from cairn.orders.revisions import freeze

    checked = check(ReleaseRequest.parse({"app": app, "environment": env, "version": version, "batches": batches, "pause_mode": mode}))
    if not queue:
        rules.refuse_if_held(app, env)
    revision = freeze(checked.revision)
    deployment = records.deployment_id("release")
    request = uuid.uuid4().hex
    params = checked.request.parameters()
    if hot_pause_s is not None:
        params["hot_pause_s"] = hot_pause_s
    run_tags = [*tags.for_kind("release", app, env), *tags.for_revision(revision.digest, revision.spec.cluster),
                f"{tags.REQUEST}{request}", *([tags.QUEUED] if queue else []), tags.by(who())]
    for _ in range(5):
        key = rules.create_key(app, env, queued_request=request if queue else None)
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(deployment, parameters=params, tags=run_tags, idempotency_key=key,
                                                         name=f"{app}-{env}-{version}")
        if f"{tags.REQUEST}{request}" in run.tags:
            return describe(run)
        if records.is_active(run):
            raise Conflict(f"{app}/{env} already has an active order {run.id} ({run.name})", hint="resume, close or wait for it")
        # The key named an order that finished meanwhile: the environment is free again, try anew.
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
        from cairn.orders import hot_pauses

        hot_pauses.suspend_if_orphaned(client, run)  # else the resume makes a Running run no process runs
        result = client.resume_flow_run(run.id, run_input={"pause_mode": str(mode or current), "comment": comment, "approved_by": who()})
    if result.status.value != "ACCEPT":
        reason = getattr(result.details, "reason", None) or result.status.value  # only a rejection or an abort gives one
        raise ActionRefused(f"order {run.id} refused the resume: {reason}")
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
    records.set_tags(run.id, [f"{tags.CLOSED_BY}{who()}"])
    records.close_run(run.id)
    return describe(records.read_order(str(run.id)))


def _run_to_end(deployment: str, params: dict[str, Any], run_tags: list[str], timeout_s: float = 900) -> FlowRun:
    """A run of one of cairn's deployments, waited for until it is final (Prefect's ``run_deployment``)."""
    from prefect.deployments import run_deployment

    run = sync.result(run_deployment(records.deployment_id(deployment), parameters=params, tags=run_tags, timeout=timeout_s,
                                     poll_interval=0.3, as_subflow=False))
    if not (run.state and run.state.is_final()):
        raise CairnError(f"{deployment} run {run.id} did not finish within {timeout_s:.0f}s", hint=ui_url(run.id))
    return run


def retry(order: str) -> dict[str, Any]:
    run = records.read_order(order)
    _refuse_unless(run, Action.RETRY)
    finished = _run_to_end("retry", {"order": str(run.id)}, [tags.CAIRN, f"{tags.KIND}retry", f"{tags.ORDER}{run.id}", tags.by(who())])
    if not (finished.state and finished.state.is_completed()):
        raise CairnError(f"retry of {run.id} failed: {finished.state.message if finished.state else '?'}", hint=ui_url(finished.id))
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(finished.id).state
        result = state.result(raise_on_failure=False) if state else None
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
    finished = _run_to_end("rollback", params, [*tags.for_kind("rollback", app, env), tags.by(who())])
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
    wanted = [tags.CAIRN, f"{tags.KIND}release"] + ([f"{tags.APP}{app}"] if app else []) + ([f"{tags.ENV}{env}"] if env else [])
    return describe_all(history.find(*wanted, limit=limit))


def wait_for(order: str, statuses: set[Status], timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = history.read(order)
        if history.statuses([run])[run.id] in statuses:
            return describe_all([run])[0]
        time.sleep(0.3)
    raise CairnError(f"order {order} did not reach {sorted(map(str, statuses))} within {timeout_s:.0f}s")


__all__ = ["close", "create_order", "list_orders", "resume", "retry", "rollback", "show", "switch_pause_mode", "wait_for"]
