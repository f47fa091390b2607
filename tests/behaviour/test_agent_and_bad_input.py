"""The control plane can die without losing or doubling instances; bad input starts nothing."""

from __future__ import annotations

import pytest

from cairn.errors import PermanentError
from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow


def test_killing_and_restarting_the_control_plane_loses_and_doubles_nothing(runtime: Harness) -> None:
    env = runtime.env("adopt")
    revision = runtime.revision(
        env, secret_env={"TOKEN": "api-token"}, env={"DEMO_HEALTH_FILE": "/tmp/healthy"},
        health_check={"period_s": 0.5, "failure_threshold": 2, "initial_delay_s": 3},  # slack for a loaded machine
        lifecycle={"post_start": {"exec": {"command": ["touch", "/tmp/healthy"]}}},
    )
    runtime.ensure(env, [0, 1], revision, secrets={"TOKEN": "tok-value-1"})
    before = runtime.wait_ready(env, 2)
    runtime.restart_control_plane()
    after = runtime.runtime.observe(env)
    assert [(i.name, i.started_at, i.address) for i in after] == [(i.name, i.started_at, i.address) for i in before]
    runtime.ensure(env, [0, 1], revision, secrets={"TOKEN": "tok-value-1"})
    assert [i.started_at for i in runtime.runtime.observe(env)] == [i.started_at for i in before], "ensure after restart doubled"
    # Make one instance unhealthy: its restart, after the agent's restart, still has its secret.
    runtime.runtime.exec(env, before[0].name, ["rm", "/tmp/healthy"], user="tester")
    restarted = runtime.wait(env, lambda i: i[0].restarts >= 1 and i[0].ready, 30, "a restart with the secret")
    check = runtime.runtime.exec(env, restarted[0].name, ["sh", "-c", 'test "$TOKEN" = tok-value-1'], user="tester")
    assert check.exit_code == 0
    assert restarted[1].restarts == 0 and len(restarted) == 2


def test_an_instance_being_retired_when_the_agent_dies_is_stopped_after_its_restart(runtime: Harness) -> None:
    env = runtime.env("retire")
    slow_stop = {"pre_stop": {"exec": {"command": ["sleep", "4"]}}, "termination_grace_period_s": 20}
    runtime.ensure(env, [0], runtime.revision(env, "v1", lifecycle=slow_stop))
    old = runtime.wait_ready(env, 1)[0]
    v2 = runtime.revision(env, "v2", lifecycle=slow_stop)
    runtime.ensure(env, [0], v2)  # the old instance is now in its PreStop, stopped off the agent's request path
    runtime.restart_control_plane()
    runtime.wait_event(env, lambda e: e.reason == "Stopped" and e.instance == old.name, 30, "the replaced instance stopped")
    assert runtime.state_dir is not None
    runtime.wait(env, lambda _: len(list(runtime.state_dir.glob(f"envs/*/*/*/instances/{old.name}*"))) == 1, 10,  # type: ignore[union-attr]
                 "the retired instance's directory removed")
    assert [(i.revision, i.ready) for i in runtime.wait_ready(env, 1)] == [(v2.digest, True)]


def test_a_missing_image_is_a_clear_error_and_starts_nothing(runtime: Harness) -> None:
    env = runtime.env("noimg")
    with pytest.raises(PermanentError) as caught:
        runtime.ensure(env, [0, 1], runtime.revision(env, image="cairn/does-not-exist:v1"))
    assert "cairn/does-not-exist:v1" in caught.value.message and caught.value.hint
    assert runtime.runtime.observe(env) == []


def test_an_uncreatable_host_path_is_a_clear_error_and_starts_nothing(runtime: Harness, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = runtime.env("nopath")
    blocker = tmp_path_factory.mktemp("blocker") / "a-file"
    blocker.write_text("not a directory")
    revision = runtime.revision(env, dirs=[{"path": "/data", "host_path": str(blocker / "sub")}])
    with pytest.raises(PermanentError) as caught:
        runtime.ensure(env, [0, 1], revision)
    assert str(blocker / "sub") in caught.value.message and caught.value.hint
    assert runtime.runtime.observe(env) == []
