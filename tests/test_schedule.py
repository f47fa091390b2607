"""Scheduled releases: the session server's own scheduler service creates the runs, the worker runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cairn.status import Status
from tests.test_webhook import register_app, wait_until

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def scheduled_runs(app: str) -> list[Any]:
    """Runs of the release deployment whose parameters name ``app`` (scheduled ones carry no app tag yet)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["release"])), limit=200)
    return [r for r in runs if (r.parameters or {}).get("app") == app]


def test_cron_schedule_from_the_cli_releases_nightly_to_test(platform: str, cli) -> None:  # type: ignore[no-untyped-def]
    from cairn.controlplane.processes import ensure_deployments
    from cairn.orders import actions

    app = register_app("sched")
    # Every minute rather than nightly, so the scheduler's run comes within a minute.
    made = cli("release", "schedule", app, "test", "--version", "v1", "--cron", "* * * * *", "--batches", "1",
               "--pause-mode", "none", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["slug"] == f"cairn-{app}-test"

    for args, code in (((app, "test", "--version", "v1", "--cron", "61 * * * *"), 2),
                       ((app, "test", "--version", "bad version!", "--cron", "0 2 * * *"), 2),
                       ((app, "test", "--version", "v1", "--cron", "0 2 * * *", "--batches", "3"), 2),
                       ((app, "staging", "--version", "v1", "--cron", "0 2 * * *"), 2),
                       (("no-such-app", "test", "--version", "v1", "--cron", "0 2 * * *"), 3),
                       (("remove", app, "production"), 3)):
        proc = cli("release", "schedule", *args)
        assert proc.returncode == code, (args, proc.stdout, proc.stderr)

    ensure_deployments()  # what `cairn up` does again: it must keep the schedules
    listed = json.loads(cli("release", "schedule", "list", "--app", app, "--json", check=True).stdout)
    assert [(s["environment"], s["version"], s["cron"], s["pause_mode"]) for s in listed] == [("test", "v1", "* * * * *", "none")]

    # The scheduler service (not this test) creates the runs; the worker starts one at its minute.
    wait_until("the scheduler to create runs", lambda: scheduled_runs(app), timeout_s=60, every_s=1)
    started = wait_until("a scheduled run to start", lambda: [r for r in scheduled_runs(app) if r.state and not r.state.is_scheduled()],
                         timeout_s=120, every_s=1)
    removed = cli("release", "schedule", "remove", app, "test", "--json")
    assert removed.returncode == 0, removed.stderr
    order = str(started[0].id)
    wait_until("the run to tag itself as an order", lambda: "kind:release" in _tags(order), timeout_s=60)
    done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s=240)
    assert done["status"] == "completed", done["message"]
    assert (done["environment"], done["version"]) == ("test", "v1")
    assert json.loads(cli("release", "schedule", "list", "--app", app, "--json", check=True).stdout) == []
    left = [r for r in scheduled_runs(app) if r.state and r.state.is_scheduled()]
    assert not left, "removing the schedule removes the runs it had not started"


def _tags(run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return list(client.read_flow_run(run_id).tags)


def test_schedules_from_a_configuration_file(platform: str, cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    app = register_app("sched")
    good = tmp_path / "schedules.yaml"
    good.write_text(f"schedules:\n  - {{app: {app}, environment: test, version: v3, cron: '0 2 * * *', pause_mode: none}}\n"
                    f"  - {{app: {app}, environment: production, version: v3, cron: '0 3 * * 1', timezone: Europe/Berlin}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"schedules:\n  - {{app: {app}, environment: test, version: v4, cron: '0 2 * * *'}}\n"
                   f"  - {{app: {app}, environment: test, version: 'no good', cron: 'never'}}\n")
    refused = cli("release", "schedule", "apply", "-f", str(bad))
    assert refused.returncode == 2 and "schedules[1]" in refused.stderr, refused.stderr
    assert json.loads(cli("release", "schedule", "list", "--app", app, "--json", check=True).stdout) == [], "nothing set on an error"

    cli("release", "schedule", "apply", "-f", str(good), check=True)
    listed = json.loads(cli("release", "schedule", "list", "--app", app, "--json", check=True).stdout)
    assert [(s["environment"], s["cron"], s["timezone"], s["pause_mode"]) for s in listed] == [
        ("production", "0 3 * * 1", "Europe/Berlin", "first_batch"), ("test", "0 2 * * *", "UTC", "none")]
    for env in ("production", "test"):
        cli("release", "schedule", "remove", app, env, check=True)
