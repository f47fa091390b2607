"""Release orders end to end: a real Prefect server, a process worker, the local agent, real instances.

Each test registers its own app (unique name) so tests never share an environment.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cairn.plan import PauseMode
from cairn.status import Status

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def register(tmp_path: Path, *, instances: int = 4, health_file: Path | None = None, failure_threshold: int = 12) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = f"rel-{uuid.uuid4().hex[:8]}"
    env: dict[str, Any] = {
        "cluster": "rel-a", "image": "cairn/demo-app:latest", "instances": instances, "cpu": 0.2, "memory_mb": 96,
        "ports": [{"container_port": 8080}],
        "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": failure_threshold},
        "lifecycle": {"termination_grace_period_s": 5},
    }
    if health_file is not None:
        env["env"] = {"DEMO_HEALTH_FILE": f"/deps/{health_file.name}"}
        env["dirs"] = [{"path": "/deps", "host_path": str(health_file.parent)}]
    # The host path lies under what the cluster allows (a local cluster's default is $CAIRN_HOME/data).
    roots = {"allowed_host_paths": [str(health_file.parent)]} if health_file is not None else {}
    data = {"clusters": [{"name": "rel-a", **roots}, {"name": "rel-b"}],
            "apps": [{"name": app, "deploy_type": "image", "environments": {"production": env}}]}
    store.apply(load_data(data))
    return app


def versions(app: str) -> dict[int, str]:
    """slot -> the version each ready instance serves, asked over HTTP as a user would."""
    import httpx

    from cairn.tasks.context import env_target

    t = env_target(app, "production")
    out = {}
    for i in t.runtime.observe(t.env):
        if i.ready:
            out[i.slot] = httpx.get(f"http://{i.address}:8080/version", timeout=5).text.strip()
    return out


def create(app: str, version: str, batches: int, mode: PauseMode) -> str:
    from cairn.orders import actions

    return actions.create_order(app, "production", version, batches, mode)["id"]


def wait(order: str, *statuses: Status) -> dict[str, Any]:
    from cairn.orders import actions

    return actions.wait_for(order, set(statuses), timeout_s=300)


def artifacts(order: str) -> tuple[list[dict[str, str]], float]:
    """The order's table rows and progress (percent of instances done), as the UI shows them."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = f"order-{uuid.UUID(order).hex[:16]}"
    with get_client(sync_client=True) as client:
        found = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key, f"{key}-progress"])))}
    return json.loads(found[key].data), float(found[f"{key}-progress"].data)


def table_description(order: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    key = f"order-{uuid.UUID(order).hex[:16]}"
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))[0].description or ""


def changed_config(app: str, env_vars: dict[str, str]) -> None:
    """Store a changed configuration for the app's production environment (no order made)."""
    from cairn.blocks import store
    from cairn.configfile import load_data

    spec = store.load_environment(app, "production").spec.model_dump(mode="json", exclude_none=True)
    spec["env"] = {**spec.get("env", {}), **env_vars}
    store.apply(load_data({"clusters": [{"name": "rel-a"}, {"name": "rel-b"}],
                           "apps": [{"name": app, "deploy_type": "image", "environments": {"production": spec}}]}))


def final_artifacts(order: str, timeout_s: float = 15.0) -> tuple[list[dict[str, str]], float]:
    """A completed order's table: its last write is made by the flow's completion hook, once
    Completed is recorded and before the run's process exits, so it lands just after the state."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows, progress = artifacts(order)
        if progress == 100.0 or time.monotonic() > deadline:
            return rows, progress
        time.sleep(0.1)


def test_pause_resume_switch_and_refusals(platform: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from cairn.errors import ActionRefused, NotFound
    from cairn.orders import actions

    app = register(tmp_path)
    first = create(app, "v1", 2, PauseMode.NONE)
    assert wait(first, Status.COMPLETED, Status.FAILED)["status"] == "completed"
    assert versions(app) == {0: "v1", 1: "v1", 2: "v1", 3: "v1"}

    # What the next order changes, before it is made: the version and the image, nothing else.
    dry = cli("release", "create", app, "production", "--version", "v2", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)["changes"]
    assert planned["against"]["version"] == "v1" and [c["field"] for c in planned["fields"]] == ["version", "image"], planned
    order = create(app, "v2", 2, PauseMode.FIRST_BATCH)
    paused = wait(order, Status.PAUSED, Status.FAILED)
    assert paused["status"] == "paused"
    # The approver sees the same diff as the table's first block.
    assert "| `version` | v1 -> v2 |" in table_description(order) and "`spec." not in table_description(order)
    assert versions(app) == {0: "v2", 1: "v2", 2: "v1", 3: "v1"}, "the first batch only, and the mix holds while paused"
    rows, progress = artifacts(order)  # written in the background, and flushed before the pause
    assert [r["state"] for r in rows] == ["done", "done", "old revision", "old revision"] and progress == 50.0, rows

    refused = cli("release", "pause-mode", order, "first_batch")
    assert refused.returncode == 4 and "already" in refused.stderr
    switched = actions.switch_pause_mode(order, PauseMode.EVERY_BATCH)
    assert switched["pause_mode"] == "every_batch" and switched["pause_mode_history"][-1]["by"]
    with pytest.raises(ActionRefused):
        actions.switch_pause_mode(order, PauseMode.EVERY_BATCH)

    actions.resume(order, PauseMode.NONE, comment="looks good")
    done = wait(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    assert versions(app) == {0: "v2", 1: "v2", 2: "v2", 3: "v2"}
    rows, progress = final_artifacts(order)
    assert [r["state"] for r in rows] == ["done"] * 4 and progress == 100.0, rows
    same = cli("env", "diff", app, "production", "--json")
    assert same.returncode == 0 and json.loads(same.stdout)["fields"] == [], same.stdout + same.stderr
    changed_config(app, {"LOG_LEVEL": "debug"})
    drift = json.loads(cli("env", "diff", app, "production", "--json").stdout)
    assert drift["against"]["version"] == "v2"
    assert [(c["field"], c["summary"]) for c in drift["fields"]] == [("spec.env.LOG_LEVEL", "(none) -> debug")]

    for args, code in ((("release", "resume", order), 4), (("release", "close", order), 4), (("release", "show", "no-such-order"), 2),
                       (("release", "show", "00000000-0000-0000-0000-000000000001"), 3)):
        proc = cli(*args)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)
    with pytest.raises(NotFound):
        actions.show("00000000-0000-0000-0000-000000000000")


def test_failing_batch_stops_the_order_and_retry_finishes_it(platform: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from cairn.orders import actions

    deps = tmp_path / "deps"
    deps.mkdir()
    health = deps / "db-up"
    app = register(tmp_path, health_file=health)
    health.touch()
    assert wait(create(app, "v1", 2, PauseMode.NONE), Status.COMPLETED, Status.FAILED)["status"] == "completed"

    health.unlink()  # the dependency the health check needs goes away
    order = create(app, "v2", 2, PauseMode.NONE)
    failed = wait(order, Status.FAILED, Status.COMPLETED)
    assert failed["status"] == "failed"
    assert "batch 1 failed" in failed["message"] and f"{app}-production-0" in failed["message"]
    shown = actions.show(order)
    by_slot = {i["slot"]: i for i in shown["instances"]}
    assert by_slot[2]["revision"] == by_slot[3]["revision"] != by_slot[0]["revision"], "no further batch started"
    rows, progress = artifacts(order)
    assert [r["state"] for r in rows[:2]] == ["failed", "failed"] and "health check" in rows[0]["reason"] and progress == 0.0, rows

    # A retry while the dependency is still away replaces the failed instances, which fail again.
    proc = cli("release", "retry", order, "--json")
    assert proc.returncode == 0, proc.stderr
    again = wait(order, Status.FAILED, Status.COMPLETED)
    assert again["status"] == "failed" and "batch 1 failed" in again["message"], again

    health.touch()  # the dependency came back: the next retry replaces them once more (nothing remembered)
    proc = cli("release", "retry", order, "--json")
    assert proc.returncode == 0, proc.stderr
    done = wait(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    assert versions(app) == {0: "v2", 1: "v2", 2: "v2", 3: "v2"}

    nothing = cli("release", "retry", order)
    assert nothing.returncode == 0 and "nothing to retry" in nothing.stdout


def test_close_while_paused_then_rollback(platform: str, tmp_path: Path) -> None:
    from cairn.orders import actions

    app = register(tmp_path)
    assert wait(create(app, "v1", 2, PauseMode.NONE), Status.COMPLETED, Status.FAILED)["status"] == "completed"
    order = create(app, "v2", 2, PauseMode.FIRST_BATCH)
    wait(order, Status.PAUSED)
    closed = actions.close(order)
    assert closed["status"] == "closed"
    assert versions(app) == {0: "v2", 1: "v2", 2: "v1", 3: "v1"}, "close leaves instances as they are"

    rolled = actions.rollback(order=order)
    assert rolled["state"] == "Completed"
    assert versions(app) == {0: "v1", 1: "v1", 2: "v1", 3: "v1"}
    assert actions.show(order)["status"] == "rolled_back"


def test_rollback_during_a_paused_release_closes_it_first(platform: str, tmp_path: Path) -> None:
    from cairn.orders import actions

    app = register(tmp_path)
    assert wait(create(app, "v1", 2, PauseMode.NONE), Status.COMPLETED)["status"] == "completed"
    order = create(app, "v2", 2, PauseMode.EVERY_BATCH)
    wait(order, Status.PAUSED)
    actions.rollback(app=app, env="production")
    assert versions(app) == {0: "v1", 1: "v1", 2: "v1", 3: "v1"}
    assert actions.show(order)["status"] == "rolled_back"


def test_one_active_order_per_environment_under_a_race(platform: str, tmp_path: Path) -> None:

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    from cairn.controlplane.processes import WORK_POOL

    app = register(tmp_path, instances=2)
    # The race is about creating orders: with the pool paused, winners stay Scheduled, so closing
    # one is immediate and twenty rounds take seconds, not minutes.
    with get_client(sync_client=True) as client:
        client.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=True))
    try:
        race(app)
    finally:
        with get_client(sync_client=True) as client:
            client.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=False))


def race(app: str) -> None:
    from cairn.errors import Conflict
    from cairn.orders import actions

    for round_ in range(20):
        results: list[Any] = []

        def attempt(results: list[Any] = results, round_: int = round_) -> None:
            try:
                # a version the registry has (demo-app v1..v9), another than the last round's
                results.append(actions.create_order(app, "production", f"v{round_ % 9 + 1}", 1, PauseMode.NONE))
            except Exception as exc:  # noqa: BLE001 - anything but Conflict fails below, with its text
                results.append(exc)

        threads = [threading.Thread(target=attempt) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [r for r in results if isinstance(r, dict)]
        assert len(winners) == 1, f"round {round_}: {results}"
        assert isinstance(next(r for r in results if not isinstance(r, dict)), Conflict)
        actions.close(winners[0]["id"])


def test_suspended_order_resumes_after_server_worker_and_agent_restart(platform: str, tmp_path: Path) -> None:
    """A pause that became a suspend holds no process; everything restarts; resume goes on from
    the next batch and the first batch's instances are not touched again."""
    from cairn.controlplane import processes as plat
    from cairn.orders import actions
    from cairn.runtimes.local import agent_status, start_agent, stop_agent
    from cairn.tasks.context import env_target

    app = register(tmp_path)
    assert wait(create(app, "v1", 2, PauseMode.NONE), Status.COMPLETED)["status"] == "completed"
    order = actions.create_order(app, "production", "v2", 2, PauseMode.FIRST_BATCH, hot_pause_s=0)["id"]
    paused = wait(order, Status.PAUSED, Status.FAILED)
    assert paused["status"] == "paused" and paused["state"] == "Suspended"
    t = env_target(app, "production")
    first_batch = {i.slot: i.started_at for i in t.runtime.observe(t.env) if i.slot in (0, 1)}

    plat.stop_worker()
    plat.stop_server()
    stop_agent()
    assert not agent_status()["running"]
    port = int(platform.rsplit(":", 1)[1].split("/")[0])
    plat.ensure_server(port=port)
    plat.ensure_worker(platform)
    start_agent()

    actions.resume(order, comment="after the restart")
    done = wait(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    assert versions(app) == {0: "v2", 1: "v2", 2: "v2", 3: "v2"}
    after = {i.slot: i.started_at for i in t.runtime.observe(t.env) if i.slot in (0, 1)}
    assert after == first_batch, "the completed batch was not redone"



def recorded_states(order: str) -> list[tuple[str, str, Any]]:
    """Every state the order's flow run went through, oldest first, as Prefect recorded them:
    (type, name, timestamp). A history, so no transition can fall between two samples."""
    import uuid as _uuid

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(_uuid.UUID(order))
    return [(s.type.value, s.name or "", s.timestamp) for s in sorted(states, key=lambda s: s.timestamp)]


def polled_after(moment: Any, timeout_s: float = 30) -> None:
    """Wait (bounded) until the worker has polled the pool's queues twice after ``moment``. The
    server stamps a poll after answering it, so the first stamp past ``moment`` may belong to a
    query that began before; the next one began after it, when the run created at ``moment``
    was there to be taken."""
    import time

    from prefect.client.orchestration import get_client

    from cairn.controlplane import processes as plat

    deadline = time.monotonic() + timeout_s
    seen = [moment]
    with get_client(sync_client=True) as client:
        while len(seen) < 3 and time.monotonic() < deadline:
            polls = [q.last_polled for q in client.read_work_queues(work_pool_name=plat.WORK_POOL) if q.last_polled]
            if polls and max(polls) > seen[-1]:
                seen.append(max(polls))
            else:
                time.sleep(0.2)
    assert len(seen) == 3, f"the worker did not poll {plat.WORK_POOL} twice within {timeout_s} s of {moment}: {seen}"


def test_orders_beyond_the_limit_wait_for_a_slot_and_cairn_up_keeps_a_changed_limit(platform: str, tmp_path: Path) -> None:
    """The work pool's concurrency limit (`cairn up --max-running`): an order beyond it waits,
    pending, while another runs, then runs; a limit changed in Prefect (UI or CLI) is kept."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolUpdate

    from cairn.controlplane import processes as plat

    with get_client(sync_client=True) as client:
        before = client.read_work_pool(plat.WORK_POOL).concurrency_limit
    assert before == plat.default_max_running()
    deps = tmp_path / "deps"
    deps.mkdir()
    gate = deps / "release-the-first"
    # The first order holds its slot until the test opens the gate (its first batch is unhealthy
    # until then, within a 120 s budget), so the second is created while the first runs by
    # construction, not by how fast six batches happen to be.
    first = register(tmp_path, instances=2, health_file=gate, failure_threshold=240)
    second = register(tmp_path, instances=2)
    try:
        plat.ensure_deployments(max_running=1)  # what `cairn up --max-running 1` does
        slow = create(first, "v1", 1, PauseMode.NONE)
        wait(slow, Status.DEPLOYING, Status.COMPLETED, Status.FAILED)
        queued = create(second, "v1", 1, PauseMode.NONE)
        # The worker has asked for work since the second run exists, and left it scheduled:
        # the first holds the pool's only slot.
        created = recorded_states(queued)[0][2]
        polled_after(created)
        assert [kind for kind, _, _ in recorded_states(queued)] == ["SCHEDULED"]
        assert recorded_states(slow)[-1][0] == "RUNNING"
        gate.touch()
        ended = wait(slow, Status.COMPLETED, Status.FAILED)
        assert ended["status"] == "completed", ended["message"]
        assert wait(queued, Status.COMPLETED, Status.FAILED)["status"] == "completed"

        ran = recorded_states(slow)
        waited = recorded_states(queued)
        slow_running = next(t for kind, _, t in ran if kind == "RUNNING")
        slow_done = ran[-1]
        assert slow_done[0] == "COMPLETED", ran
        queued_began = next(t for kind, _, t in waited if kind in ("PENDING", "RUNNING"))
        queued_at = waited[0]
        assert queued_at[0] == "SCHEDULED" and slow_running < queued_at[2] < slow_done[2], (
            f"the second order was created while the first ran: {waited} / {ran}")
        assert queued_began >= slow_done[2], f"the second order started before the first ended (one slot): {waited} / {ran}"

        with get_client(sync_client=True) as client:
            client.update_work_pool(plat.WORK_POOL, WorkPoolUpdate(concurrency_limit=3))  # as in the UI
        plat.ensure_deployments()  # `cairn up` again
        with get_client(sync_client=True) as client:
            assert client.read_work_pool(plat.WORK_POOL).concurrency_limit == 3
    finally:
        plat.ensure_deployments(max_running=before)


def _hot_paused_order(tmp_path: Path) -> tuple[str, str, dict[int, float]]:
    """An order paused hot after its first batch (the default 600 s window), with the first
    batch's instances' start times."""
    from cairn.orders import actions
    from cairn.tasks.context import env_target

    app = register(tmp_path)
    assert wait(create(app, "v1", 2, PauseMode.NONE), Status.COMPLETED)["status"] == "completed"
    order = actions.create_order(app, "production", "v2", 2, PauseMode.FIRST_BATCH)["id"]
    paused = wait(order, Status.PAUSED, Status.FAILED)
    assert paused["status"] == "paused" and paused["state"] == "Paused", paused
    t = env_target(app, "production")
    return app, order, {i.slot: i.started_at for i in t.runtime.observe(t.env) if i.slot in (0, 1)}


def _restart_and_resume(platform: str, app: str, order: str, first_batch: dict[int, float]) -> None:
    from cairn.controlplane import processes as plat
    from cairn.orders import actions
    from cairn.runtimes.local import start_agent
    from cairn.tasks.context import env_target

    plat.ensure_server(port=_port(platform))
    plat.ensure_worker(platform)
    start_agent()
    assert recorded_states(order)[-1][:2] == ("PAUSED", "Suspended"), recorded_states(order)[-3:]
    actions.resume(order, comment="after the restart")
    done = wait(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    assert versions(app) == {0: "v2", 1: "v2", 2: "v2", 3: "v2"}
    t = env_target(app, "production")
    assert {i.slot: i.started_at for i in t.runtime.observe(t.env) if i.slot in (0, 1)} == first_batch, "the first batch was not redone"


def _port(api_url: str) -> int:
    return int(api_url.rsplit(":", 1)[1].split("/")[0])


def test_a_platform_stop_during_a_hot_pause_suspends_the_order_and_a_resume_goes_on(platform: str, tmp_path: Path) -> None:
    """`cairn down` stops the worker (its runs get SIGTERM), then the server: the hot-paused run
    suspends itself while the server still answers, instead of dying as a Paused run nobody runs."""
    from cairn.controlplane import processes as plat
    from cairn.runtimes.local import stop_agent

    app, order, first_batch = _hot_paused_order(tmp_path)
    plat.stop_worker()
    assert recorded_states(order)[-1][:2] == ("PAUSED", "Suspended"), recorded_states(order)[-3:]
    plat.stop_server()
    stop_agent()
    _restart_and_resume(platform, app, order, first_batch)


def test_a_hot_pause_whose_processes_were_all_killed_is_suspended_when_the_worker_starts(platform: str, tmp_path: Path) -> None:
    """SIGKILL of the order's process, the worker, the warm start server, the Prefect server and the
    agent: nothing can record anything. The run stays Paused; the worker starting again finds its
    holder gone and suspends it, so a resume goes on from the next batch."""
    import json as _json
    import os
    import signal

    from cairn.blocks import api
    from cairn.controlplane import processes as plat
    from cairn.orders import hot_pauses
    from cairn.runtimes.local import agent_status

    app, order, first_batch = _hot_paused_order(tmp_path)
    holder = api.get(f"variables/name/{hot_pauses.variable_name(order)}", "holder")["value"]
    assert hot_pauses.is_gone(holder) is False, holder
    state = _json.loads(plat.state_file().read_text())
    os.kill(holder["pid"], signal.SIGKILL)
    for name in ("worker", "warm", "server"):
        os.killpg(state[name]["pid"], signal.SIGKILL)
    os.kill(agent_status()["pid"], signal.SIGKILL)
    assert hot_pauses.is_gone(holder) is True
    _restart_and_resume(platform, app, order, first_batch)
