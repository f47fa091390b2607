"""Starting and stopping the local agent is idempotent and leaves a clear status."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cairn.runtimes.local import agent_status, start_agent, stop_agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the local agent needs root")


def test_start_twice_is_one_agent_and_stop_twice_is_fine(tmp_path: Path) -> None:
    state = tmp_path / "agent"
    first = start_agent(state)
    try:
        assert first["running"] and first["pid"] and first["instances"] == 0
        assert first["socket"] == str(state / "agent.sock")
        assert isinstance(first["cgroups"], bool)
        assert start_agent(state)["pid"] == first["pid"]
        assert agent_status(state)["pid"] == first["pid"]
    finally:
        assert stop_agent(state, purge=True)["stopped"] is True
    assert agent_status(state)["running"] is False
    assert stop_agent(state) == {"stopped": False, "purged": 0}


def test_its_socket_is_private_and_its_errors_come_back_as_cairn_errors(tmp_path: Path) -> None:
    from cairn.errors import NotFound
    from cairn.runtime import EnvRef
    from cairn.runtimes.local import LocalRuntime

    state = tmp_path / "agent"
    start_agent(state)
    try:
        assert (state / "agent.sock").stat().st_mode & 0o777 == 0o600
        runtime = LocalRuntime(state)
        env = EnvRef("local", "shop", "test")
        assert runtime.observe(env) == [] and runtime.traffic(env).listeners == ()
        with pytest.raises(NotFound, match="no instance shop-test-0"):
            runtime.exec(env, "shop-test-0", ["true"], user="tester")
        with pytest.raises(NotFound, match="no such endpoint GET /nowhere"):
            runtime._call("GET", "/nowhere")
    finally:
        stop_agent(state, purge=True)


def test_a_long_poll_waiting_when_the_agent_stops_is_answered_not_cut(tmp_path: Path) -> None:
    import threading

    from cairn.runtime import EnvRef
    from cairn.runtimes.local import LocalRuntime

    state = tmp_path / "agent"
    pid = start_agent(state)["pid"]
    runtime = LocalRuntime(state)
    env = EnvRef("local", "shop", "test")
    answers: list[object] = []

    def inotify_open() -> bool:  # the agent opens it at its first long poll (runtimes/local/node.py)
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.append(os.readlink(fd))
            except FileNotFoundError:
                continue
        return "anon_inode:inotify" in links

    def poll() -> None:
        try:  # nothing changes for 50 s: only the stop can end it in time
            answers.append(runtime.observe_slots(env, [0], unless=[], wait_s=50))
        except Exception as exc:  # noqa: BLE001 - the failure is the answer under test
            answers.append(exc)

    assert not inotify_open()
    waiting = threading.Thread(target=poll)
    waiting.start()
    try:
        deadline = time.monotonic() + 30
        while not inotify_open() and time.monotonic() < deadline:  # until the poll waits in the agent
            time.sleep(0.01)
        assert inotify_open(), "the long poll reached the agent"
    finally:
        assert stop_agent(state)["stopped"] is True
    waiting.join(40)
    assert answers == [[]], "the poll was answered with the observation, not a dropped connection"
    assert not (state / "agent.sock").exists() and not (state / "agent.pid").exists()
