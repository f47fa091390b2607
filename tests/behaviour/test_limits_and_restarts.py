"""Memory limits kill with OOMKilled; crashes restart with a growing back-off."""

from __future__ import annotations

import re

import pytest

from tests.behaviour.conftest import BACKOFF_BASE_S, Harness

pytestmark = pytest.mark.slow


def test_over_the_memory_limit_is_oom_killed(runtime: Harness) -> None:
    env = runtime.env("oom")
    runtime.ensure(env, [0], runtime.revision(env, memory_mb=64, env={"DEMO_GROW_MB_PER_S": "40"}, health_check={}))
    event = runtime.wait_event(env, lambda e: e.reason == "OOMKilled", 30, "an OOMKilled event")
    assert event.warning and "137" in event.message
    [instance] = runtime.wait(env, lambda i: bool(i) and i[0].exit_code == 137, 10, "exit code 137")
    assert not instance.ready or instance.restarts >= 1


def test_restart_back_off_grows(runtime: Harness) -> None:
    env = runtime.env("crash")
    runtime.ensure(env, [0], runtime.revision(env, env={"DEMO_CRASH_AFTER_S": "0.1"}, health_check={}))
    runtime.wait(env, lambda i: bool(i) and i[0].restarts >= 3, 30, "three restarts")
    delays = [float(m.group(1)) for e in runtime.runtime.events(env) if e.reason == "BackOff"
              if (m := re.search(r"Back-off ([0-9.]+)s", e.message))]
    assert delays[:3] == [BACKOFF_BASE_S, 2 * BACKOFF_BASE_S, 4 * BACKOFF_BASE_S], delays
    [instance] = runtime.runtime.observe(env)
    assert instance.exit_code == 1
    assert all(e.warning for e in runtime.runtime.events(env) if e.reason == "BackOff")
