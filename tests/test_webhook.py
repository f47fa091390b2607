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
                                            "failure_threshold": 12}}
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


@pytest.fixture(scope="module")
def hook(platform: str) -> Iterator[str]:
    from cairn.blocks.store import set_secret
    from cairn.deployments.platform import free_port

    set_secret("webhook-secret", SECRET)
    port = free_port(8787)
    proc = subprocess.Popen([sys.executable, "-m", "cairn.deployments.cli", "webhook", "serve", "--port", str(port)],
                            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
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


def signed(body: dict[str, Any], *, delivery: str | None = None, stamp: int | None = None,
           secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    from cairn.deployments.webhook import sign

    raw = json.dumps(body).encode()
    delivery = delivery or uuid.uuid4().hex
    stamp = int(time.time()) if stamp is None else stamp
    return raw, {"Content-Type": "application/json", "X-Cairn-Delivery": delivery, "X-Cairn-Timestamp": str(stamp),
                 "X-Cairn-Signature": sign(secret, stamp, delivery, raw)}


def post(url: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/releases", content=raw, headers=headers, timeout=120)


def runs_of(app: str) -> list[Any]:
    from cairn.flows import orders

    return orders.find_runs("cairn", f"app:{app}", limit=50)


def delivered(delivery: str) -> list[Any]:
    from cairn.flows import orders

    return orders.find_runs("cairn", f"delivery:{delivery}", limit=50)


def finish(order: str) -> dict[str, Any]:
    from cairn.deployments import actions

    return actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s=240)


def test_signed_request_starts_one_release_and_a_replay_is_refused(hook: str) -> None:
    app = register_app("hook")
    raw, headers = signed({"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"})
    answer = post(hook, raw, headers)
    assert answer.status_code == 202, answer.text
    order = answer.json()["order"]
    done = finish(order)
    assert done["status"] == "completed", done["message"]
    assert (done["app"], done["environment"], done["version"]) == (app, "test", "v1")
    run = delivered(headers["X-Cairn-Delivery"])
    assert [str(r.id) for r in run] == [order] and "by:webhook" in run[0].tags

    again = post(hook, raw, headers)  # the same delivery, still fresh and well signed
    assert again.status_code == 409 and again.json()["order"] == order, again.text
    assert len(runs_of(app)) == 1


def test_unsigned_tampered_stale_and_invalid_requests_start_nothing(hook: str) -> None:
    app = register_app("hook")
    body = {"app": app, "environment": "test", "version": "v1", "pause_mode": "none"}
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
        assert not delivered(headers["X-Cairn-Delivery"]), f"{name}: a run was started"
    assert runs_of(app) == []


def test_twenty_concurrent_duplicates_of_one_delivery_start_exactly_one_release(hook: str) -> None:
    app = register_app("hook")
    raw, headers = signed({"app": app, "environment": "production", "version": "v1", "batches": 1, "pause_mode": "none"})
    answers: list[httpx.Response | BaseException] = []
    gate = threading.Barrier(20)

    def send() -> None:
        gate.wait()
        try:
            answers.append(post(hook, raw, headers))
        except BaseException as exc:  # reported below with the others
            answers.append(exc)

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    codes = sorted(a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers)  # type: ignore[misc]
    assert codes == [202] + [409] * 19, codes
    runs = delivered(headers["X-Cairn-Delivery"])
    assert len(runs) == 1 and len(runs_of(app)) == 1
    order = next(a.json()["order"] for a in answers if isinstance(a, httpx.Response) and a.status_code == 202)
    assert str(runs[0].id) == order
    assert finish(order)["status"] == "completed"
