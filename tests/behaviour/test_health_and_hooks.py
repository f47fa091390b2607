"""Health checks gate readiness and fail with a reason; PostStart and PreStop keep Kubernetes' rules."""

from __future__ import annotations

import time

import pytest

from cairn.runtime import Phase
from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow


# PostStart gates the health check on both runtimes (the local shim probes only after it; the
# kubelet reports the container running only after it, and cairn's verdict quotes a check run
# then). Waiting there until the app has answered once makes "what the check got" the app's 500,
# however long the app takes to listen on a loaded machine; an app that never listens fails the
# hook, not this test's assertion about the reason.
ANSWERED_ONCE = ["python3", "-c", (
    "import time, urllib.request, urllib.error\n"
    "deadline = time.monotonic() + 90\n"
    "while True:\n"
    "    try:\n"
    "        urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2); break\n"
    "    except urllib.error.HTTPError: break\n"
    "    except OSError:\n"
    "        if time.monotonic() > deadline: raise SystemExit('the app never listened on :8080')\n"
    "        time.sleep(0.1)\n")]


def test_failing_http_check_fails_the_instance_with_what_it_got(runtime: Harness) -> None:
    env = runtime.env("hhttp")
    revision = runtime.revision(env, env={"DEMO_FAIL_HEALTH": "1"},
                                health_check={"period_s": 0.5, "failure_threshold": 3},
                                lifecycle={"post_start": {"exec": {"command": ANSWERED_ONCE}}})
    runtime.ensure(env, [0], revision)
    [instance] = runtime.wait(env, lambda i: bool(i) and i[0].phase is Phase.FAILED, 120, "the instance to fail")
    assert not instance.ready
    assert instance.reason and "HTTP GET :8080/healthz answered 500" in instance.reason, instance.reason
    assert "DEMO_FAIL_HEALTH" in instance.reason, "the reason quotes what the check got"
    # The kubelet's events reach the API a moment after the pod's status: wait for it, bounded.
    runtime.wait_event(env, lambda e: e.warning and e.reason == "Unhealthy", 30, "a warning Unhealthy event")
    assert not [e for e in runtime.runtime.events(env) if e.reason == "PostStartFailed"], "the app listened"


def test_failing_exec_check_names_the_command_and_its_stderr(runtime: Harness) -> None:
    env = runtime.env("hexec")
    check = {"http": None, "exec": {"command": ["sh", "-c", "echo no-db-connection >&2; exit 3"]},
             "period_s": 0.5, "failure_threshold": 2}
    revision = runtime.revision(env, health_check=check)
    runtime.ensure(env, [0], revision)
    [instance] = runtime.wait(env, lambda i: bool(i) and i[0].phase is Phase.FAILED, 30, "the instance to fail")
    assert instance.reason and "exited 3" in instance.reason and "no-db-connection" in instance.reason, instance.reason

    runtime.ensure(env, [0], revision)
    assert runtime.runtime.observe(env)[0].phase is Phase.FAILED, "ensure leaves a failed slot of the same revision alone"
    runtime.ensure(env, [0], revision, replace_failed=True)
    scheduled = [e for e in runtime.runtime.events(env) if e.reason == "Scheduled"]
    assert len(scheduled) == 2, "replace_failed recreates the failed slot"


def test_post_start_failure_kills_the_instance(runtime: Harness) -> None:
    env = runtime.env("post")
    revision = runtime.revision(env, lifecycle={"post_start": {"exec": {"command": ["sh", "-c", "echo hook-broke >&2; exit 7"]}}})
    runtime.ensure(env, [0], revision)
    event = runtime.wait_event(env, lambda e: e.reason == "PostStartFailed", 20, "PostStartFailed")
    assert event.warning and "hook-broke" in event.message
    runtime.wait_event(env, lambda e: e.reason == "Killing", 10, "the kill after PostStart failed")
    [instance] = runtime.wait(env, lambda i: i[0].restarts >= 1, 20, "a restart after the kill")
    assert not instance.ready


def test_post_start_passing_gates_running(runtime: Harness) -> None:
    env = runtime.env("postok")
    revision = runtime.revision(env, health_check={},
                                lifecycle={"post_start": {"exec": {"command": ["sh", "-c", "sleep 1; touch /tmp/hooked"]}}})
    runtime.ensure(env, [0], revision)
    [instance] = runtime.wait_ready(env, 1)
    result = runtime.runtime.exec(env, instance.name, ["ls", "/tmp/hooked"], user="tester")
    assert result.exit_code == 0, "ready only after PostStart finished"


def test_pre_stop_overrunning_the_grace_period_ends_in_sigkill(runtime: Harness) -> None:
    env = runtime.env("prestop")
    grace = 2.0
    revision = runtime.revision(env, lifecycle={"pre_stop": {"exec": {"command": ["sleep", "30"]}}, "termination_grace_period_s": grace})
    runtime.ensure(env, [0], revision)
    [instance] = runtime.wait_ready(env, 1)
    began = time.monotonic()
    runtime.runtime.terminate(env, [0])
    took = time.monotonic() - began
    # The grace period is honoured, and the 30 s PreStop is not waited for: how close to the grace
    # period terminate returns is a figure for bench/timings.py, not a test's budget.
    assert grace - 0.2 <= took < 30, f"terminate took {took:.1f}s for a {grace}s grace period"
    events = runtime.runtime.events(env, instance=instance.name)
    reasons = [e.reason for e in events]
    assert "PreStop" in reasons
    assert any(e.reason == "Killing" and "SIGKILL" in e.message for e in events), reasons
    stopped = [e for e in events if e.reason == "Stopped"]
    assert stopped and "137" in stopped[-1].message
    assert runtime.runtime.observe(env) == []


def test_pre_stop_runs_before_sigterm(runtime: Harness, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = runtime.env("order")
    host = tmp_path_factory.mktemp("order")
    revision = runtime.revision(
        env, env={"DEMO_LOG_FILE": "/data/app.log"}, dirs=[{"path": "/data", "host_path": str(host)}],
        lifecycle={"pre_stop": {"exec": {"command": ["sh", "-c", "echo PRESTOP >> /data/app.log"]}}, "termination_grace_period_s": 5},
    )
    runtime.ensure(env, [0], revision)
    runtime.wait_ready(env, 1)
    runtime.runtime.terminate(env, [0])
    text = (host / "app.log").read_text()
    assert "PRESTOP" in text and "SIGTERM received" in text
    assert text.index("PRESTOP") < text.index("SIGTERM received")
