"""Starting and stopping the local agent is idempotent and leaves a clear status."""

from __future__ import annotations

import os
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
