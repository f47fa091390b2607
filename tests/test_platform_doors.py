"""The platform's own doors, on the session's platform: the API needs its auth string on
loopback too, a flow run cannot choose the worker's command or environment, and a release's
``rev:`` tag cannot ship another app's or environment's revision."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.test_webhook import register_app, wait_until

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _final(run_id: Any, timeout_s: float = 240) -> Any:
    from prefect.client.orchestration import get_client

    def ended() -> Any:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return wait_until(f"flow run {run_id} to end", ended, timeout_s=timeout_s)


def _release_deployment() -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name("release/release")


def test_the_api_refuses_a_request_without_the_auth_string_on_loopback(platform: str) -> None:
    from cairn.controlplane import auth

    user, password = auth.configured().split(":", 1)  # type: ignore[union-attr]
    assert httpx.get(f"{platform}/health", timeout=10).status_code == 200, "probes stay open"
    assert httpx.post(f"{platform}/flow_runs/filter", json={}, timeout=10).status_code == 401
    assert httpx.post(f"{platform}/flow_runs/filter", json={}, auth=(user, "not-the-password"), timeout=10).status_code == 401
    assert httpx.post(f"{platform}/flow_runs/filter", json={}, auth=(user, password), timeout=10).status_code == 200


def test_a_run_cannot_set_the_worker_command_or_environment(platform: str, tmp_path: Path) -> None:
    """Asked for through the deployment (what the UI and every client do), the server refuses the
    job variables. Asked for on a run created directly (``POST /flow_runs`` checks none), the worker
    runs its own command in its own environment: the marker the command would touch is never made,
    and the wrong auth string the environment would set did not stop the run from reaching the API
    (it ran the release flow, which failed on the unknown app, instead of crashing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import PrefectHTTPStatusError

    marker = tmp_path / "the-run-chose-the-command"
    hostile = {"command": f"touch {marker}", "env": {"PREFECT_API_AUTH_STRING": "cairn:not-the-platform-string"},
               "working_dir": "/"}
    deployment = _release_deployment()
    app = f"no-such-app-{uuid.uuid4().hex[:6]}"
    parameters = {"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"}
    with get_client(sync_client=True) as client:
        for name, value in hostile.items():
            with pytest.raises(PrefectHTTPStatusError) as refused:
                client.create_flow_run_from_deployment(deployment.id, parameters=parameters, job_variables={name: value})
            assert refused.value.response.status_code == 422, (name, refused.value.response.text)
        created = client.request("POST", "/flow_runs/", json={
            "flow_id": str(deployment.flow_id), "deployment_id": str(deployment.id), "parameters": parameters,
            "job_variables": hostile, "work_pool_name": "cairn", "state": {"type": "SCHEDULED"}, "tags": ["cairn"]}).json()
    run = _final(created["id"])
    assert run.job_variables == hostile, "the run did ask for them"
    assert not marker.exists(), "the worker ran the run's command"
    assert run.state.type == StateType.FAILED and app in (run.state.message or ""), (run.state.type, run.state.message)


@pytest.mark.parametrize("other", [
    pytest.param("app", id="a tag naming another app's revision fails the order before any batch"),
    pytest.param("environment", id="a tag naming another environment's revision of the app fails the order before any batch"),
])
def test_a_release_ships_only_a_revision_of_its_own_app_and_environment(platform: str, other: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from cairn.orders import tags
    from cairn.orders.requests import ReleaseRequest
    from cairn.orders.revisions import snapshot
    from cairn.tasks.context import env_target

    app = register_app("doors")
    theirs = register_app("doors-other") if other == "app" else app
    their_env = "test" if other == "app" else "production"
    revision = snapshot(ReleaseRequest.parse({"app": theirs, "environment": their_env, "version": "v1", "batches": 1}))
    parameters = {"app": app, "environment": "test", "version": "v1", "batches": 1, "pause_mode": "none"}
    with get_client(sync_client=True) as client:
        created = client.create_flow_run_from_deployment(
            _release_deployment().id, parameters=parameters,
            tags=[tags.CAIRN, *tags.for_revision(revision.digest, revision.spec.cluster)])
    run = _final(created.id)
    message = run.state.message or ""
    assert run.state.type == StateType.FAILED, (run.state.type, message)
    assert f"a revision of {theirs}/{their_env}, not of {app}/test" in message, message
    target = env_target(app, "test")
    assert target.runtime.observe(target.env) == [], "an instance was started"
