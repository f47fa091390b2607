"""The signed webhook end to end: `cairn webhook serve` as a process, a real server, worker and agent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from cairn.status import Status

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
SECRET = "webhook-test-secret-" + uuid.uuid4().hex


def register_app(prefix: str, instances: int = 2) -> str:
    """An app with production and test environments (on two clusters), instances that start fast."""
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = f"{prefix}-{uuid.uuid4().hex[:8]}"
    env: dict[str, Any] = {"image": "cairn/demo-app:latest", "instances": instances, "cpu": 0.2, "memory_mb": 96,
                           "ports": [{"container_port": 8080}],
                           "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2,
                                            "failure_threshold": 40}}  # 20 s: an instance starts slowly on a loaded machine
    data = {"clusters": [{"name": "hook-a"}, {"name": "hook-b"}],
            "apps": [{"name": app, "deploy_type": "image",
                      "environments": {"production": {**env, "cluster": "hook-a"}, "test": {**env, "cluster": "hook-b"}}}]}
    store.apply(load_data(data))
    return app


def wait_until(what: str, check, timeout_s: float = 60, every_s: float = 0.3):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@contextmanager
def webhook_process(argv: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """``python argv`` serving the webhook on ``port`` until the block ends; its base URL once it answers."""
    proc = subprocess.Popen([sys.executable, *argv], env=env or os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, f"webhook server exited with {proc.returncode}"
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until("the webhook server", up, timeout_s=60)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cairn_webhook(port: int) -> list[str]:
    return ["-m", "cairn.cli.main", "webhook", "serve", "--port", str(port)]


@pytest.fixture(scope="module")
def hook(platform: str) -> Iterator[str]:
    from cairn.blocks.store import set_secret
    from cairn.controlplane.processes import free_port

    set_secret("webhook-secret", SECRET)
    port = free_port(8787)
    with webhook_process(cairn_webhook(port), port) as url:
        yield url


def signed(body: dict[str, Any], *, delivery: str | None = None, stamp: int | None = None,
           secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    from cairn.webhook.server import sign

    raw = json.dumps(body).encode()
    delivery = delivery or uuid.uuid4().hex
    stamp = int(time.time()) if stamp is None else stamp
    return raw, {"Content-Type": "application/json", "X-Cairn-Delivery": delivery, "X-Cairn-Timestamp": str(stamp),
                 "X-Cairn-Signature": sign(secret, stamp, delivery, raw)}


def post(url: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/releases", content=raw, headers=headers, timeout=120)


def runs_of(app: str) -> list[Any]:
    """Every run of the release deployment for ``app``, started or not (an automation's run has
    no tags until it starts)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["release"])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
    return [r for r in runs if (r.parameters or {}).get("app") == app]


def delivered(app: str, delivery: str) -> list[Any]:
    return [r for r in runs_of(app) if (r.parameters or {}).get("requested_by") == f"webhook:{delivery}"]


def wait_status(order: str, *statuses: Status, timeout_s: float = 240) -> dict[str, Any]:
    from cairn.orders import actions

    # A run from the UI's form or the webhook's automation is an order once it runs and tags
    # itself (kind, app, env, revision).
    wait_until(f"order {order} to start", lambda: "kind:release" in read(order).tags, timeout_s=120)
    return actions.wait_for(order, set(statuses), timeout_s=timeout_s)


def finish(order: str) -> dict[str, Any]:
    return wait_status(order, Status.COMPLETED, Status.FAILED)


def read(run_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def test_signed_request_starts_one_release_through_the_automation_and_a_replay_is_refused(hook: str) -> None:
    from cairn.orders import events as automations

    app = register_app("hook")
    raw, headers = signed({"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"})
    delivery = headers["X-Cairn-Delivery"]
    answer = post(hook, raw, headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["event"] == str(automations.event_id(delivery))
    order = answer.json()["order"] or str(wait_until("the automation's run", lambda: delivered(app, delivery))[0].id)

    # The order is the automation's run of the release deployment, its parameters from the event.
    run = read(order)
    automation = automations.automation_id()
    assert run.created_by is not None and (run.created_by.type, run.created_by.id) == ("AUTOMATION", automation), run.created_by
    assert run.parameters == {"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none",
                              "requested_by": f"webhook:{delivery}"}, run.parameters
    done = finish(order)
    assert done["status"] == "completed", done["message"]
    assert (done["app"], done["environment"], done["version"]) == (app, "test", "v1")
    tags = set(read(order).tags)  # the flow tags itself as any order: kind, app, env, revision, who
    assert {"cairn", "kind:release", f"app:{app}", "env:test", f"by:webhook:{delivery}"} <= tags, tags
    assert any(t.startswith("rev:") for t in tags), tags

    again = post(hook, raw, headers)  # the same delivery, still fresh and well signed
    assert again.status_code == 409 and again.json()["order"] == order, again.text
    assert [str(r.id) for r in runs_of(app)] == [order]
    # `cairn up` again keeps the one automation.
    assert automations.ensure_release_automation(run.deployment_id) == automation


def test_unsigned_tampered_stale_and_invalid_requests_start_nothing(hook: str) -> None:
    app = register_app("hook")
    body = {"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"}
    cases: dict[str, tuple[bytes, dict[str, str], int]] = {}

    raw, h = signed(body)
    cases["unsigned"] = (raw, {k: v for k, v in h.items() if k != "X-Cairn-Signature"}, 401)
    raw, h = signed(body)
    cases["tampered"] = (raw.replace(b'"v1"', b'"v9"'), h, 401)
    raw, h = signed(body, secret="not-the-shared-secret")
    cases["wrong secret"] = (raw, h, 401)
    raw, h = signed(body, stamp=int(time.time()) - 301)
    cases["stale"] = (raw, h, 401)
    raw, h = signed({**body, "version": "bad version!"})
    cases["bad version"] = (raw, h, 422)
    raw, h = signed({**body, "batches": 3})  # more batches than the 2 instances
    cases["too many batches"] = (raw, h, 422)
    raw, h = signed({**body, "app": "no-such-app-" + uuid.uuid4().hex[:6]})
    cases["unknown app"] = (raw, h, 422)
    for name, (raw, headers, code) in cases.items():
        answer = post(hook, raw, headers)
        assert answer.status_code == code, (name, answer.status_code, answer.text)
        assert answer.json()["error"], name

    # A good request afterwards: its run shows the automation is live, and none of the refused
    # ones started a run (they posted no event at all).
    raw, headers = signed(body)
    assert post(hook, raw, headers).status_code == 202
    control = wait_until("the good request's run", lambda: delivered(app, headers["X-Cairn-Delivery"]))
    assert [r.id for r in runs_of(app)] == [control[0].id]
    done = finish(str(control[0].id))
    assert done["status"] == "completed", done["message"]


def test_twenty_concurrent_duplicates_of_one_delivery_start_exactly_one_release(hook: str) -> None:
    from cairn.orders import events as automations

    app = register_app("hook")
    raw, headers = signed({"app": app, "environment": "production", "version": "v1", "batches": 1, "pause_mode": "none"})
    delivery = headers["X-Cairn-Delivery"]
    answers: list[httpx.Response | BaseException] = []
    gate = threading.Barrier(20)

    def send() -> None:
        gate.wait()
        try:
            answers.append(post(hook, raw, headers))
        except BaseException as exc:  # noqa: BLE001 - reported below with the others
            answers.append(exc)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    codes = sorted(a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers)  # type: ignore[misc]
    assert codes == [202] + [409] * 19, codes
    accepted = next(a.json() for a in answers if isinstance(a, httpx.Response) and a.status_code == 202)
    order = accepted["order"] or str(wait_until("the automation's run", lambda: delivered(app, delivery))[0].id)

    # The same event again, straight to Prefect (as a second webhook process would post it):
    # Prefect fires once per event id. A later delivery's run proves the duplicate was taken
    # from the queue before it, and the duplicate is dropped on its first look (a seen id).
    automations.post_event(automations.release_event(delivery, app, "production", {
        "version": "v1", "batches": 1, "pause_mode": "none"}))
    raw2, headers2 = signed({"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"})
    assert post(hook, raw2, headers2).status_code == 202
    control = wait_until("the later delivery's run", lambda: delivered(app, headers2["X-Cairn-Delivery"]))[0]

    assert [str(r.id) for r in delivered(app, delivery)] == [order]
    assert sorted(str(r.id) for r in runs_of(app)) == sorted([order, str(control.id)])
    assert automations.event_id(delivery) == uuid.UUID(accepted["event"])
    for run in (order, str(control.id)):
        done = finish(run)
        assert done["status"] == "completed", done["message"]



def test_a_delivery_prefect_could_not_start_can_be_sent_again(hook: str) -> None:
    """Prefect never retries an automation's failed action (a busy SQLite answers its create with a
    503): once Prefect reports the failure, a resend of the delivery posts its next attempt."""
    from cairn.orders import events as automations

    app = register_app("hook")
    body = {"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"}
    raw, headers = signed(body)
    delivery = headers["X-Cairn-Delivery"]
    # The delivery's first event, as the deployment refuses it: a version its schema does not allow.
    automations.post_event(automations.release_event(delivery, app, "test", {**body, "version": "bad version!"}))
    reason = wait_until("the automation's action to fail", lambda: automations.action_failure(automations.event_id(delivery)))
    assert "version" in reason, reason

    answer = post(hook, raw, headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["event"] == str(automations.event_id(delivery, 2))
    order = answer.json()["order"] or str(wait_until("the automation's run", lambda: delivered(app, delivery))[0].id)
    assert [str(r.id) for r in runs_of(app)] == [order]
    done = finish(order)
    assert done["status"] == "completed", done["message"]
    assert post(hook, raw, headers).status_code == 409


def test_a_replay_after_the_webhook_restarted_is_refused_before_its_run_exists(hook: str) -> None:
    """The delivery ids a webhook posted events for outlive it: with the automation paused, the
    delivery's run does not exist yet (the durable check finds nothing), and the same signed
    request sent to a restarted webhook is still a replay. Kept 0600 in CAIRN_HOME/webhook."""
    import stat

    from prefect.client.orchestration import get_client

    from cairn.controlplane.processes import free_port
    from cairn.orders import events as automations
    from cairn.webhook.deliveries import default_path

    app = register_app("hook")
    raw, headers = signed({"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"})
    automation = automations.automation_id()
    port = free_port(8788)
    with get_client(sync_client=True) as client:
        client.pause_automation(automation)
    try:
        with webhook_process(cairn_webhook(port), port) as url:
            first = post(url, raw, headers)
            assert first.status_code == 202 and first.json()["order"] is None, first.text  # no run: the automation is paused
        with webhook_process(cairn_webhook(port), port) as url:  # a new process, same CAIRN_HOME
            again = post(url, raw, headers)
            assert again.status_code == 409 and "already received" in again.json()["error"], again.text
        assert delivered(app, headers["X-Cairn-Delivery"]) == []
    finally:
        with get_client(sync_client=True) as client:
            client.resume_automation(automation)
    assert oct(stat.S_IMODE(default_path().stat().st_mode)) == oct(0o600)
    assert oct(stat.S_IMODE(default_path().parent.stat().st_mode)) == oct(0o700)
