"""The loopback registry cairn starts: idempotent, loopback only, and never mistaken for a stranger."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import psutil
import pytest

from cairn.errors import PermanentError
from cairn.images import registry
from cairn.procs import ProcessRef


def test_start_is_idempotent_loopback_only_and_stop_stops_it(tmp_path: Path) -> None:
    state = tmp_path / "reg"
    url = registry.start(state, port=0)
    try:
        record = json.loads((state / "registry.json").read_text())
        assert registry.start(state) == url  # the running one, not a second process
        assert json.loads((state / "registry.json").read_text()) == record
        assert registry.healthy(state) and registry.address(state) == url
        host, port = url.split(":")
        listening = {c.laddr for c in psutil.Process(record["pid"]).net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN}
        assert {(a.ip, a.port) for a in listening} == {("127.0.0.1", int(port))}
        assert httpx.get(f"http://{url}/v2/").status_code == 200  # no auth on loopback
        with pytest.raises(PermanentError):
            registry.start(state, port=int(port) + 1)  # refuses to move a running registry
    finally:
        assert registry.stop(state)
    assert not psutil.pid_exists(record["pid"]) or psutil.Process(record["pid"]).status() == psutil.STATUS_ZOMBIE
    assert not registry.healthy(state) and registry.address(state) is None
    assert not registry.stop(state)


def test_a_reused_pid_is_never_taken_for_our_registry(tmp_path: Path) -> None:
    state = tmp_path / "reg"
    state.mkdir()
    # This very process, under a start time that is not its own: a pid the kernel handed on.
    me = ProcessRef.of(os.getpid())
    assert me is not None
    (state / "registry.json").write_text(json.dumps({"pid": me.pid, "start": me.start - 100, "port": 1}))
    assert not registry.healthy(state) and registry.address(state) is None
    assert not registry.stop(state)  # and it is not signalled
    # Right start time, but not a registry of this state directory (nor listening on the port).
    (state / "registry.json").write_text(json.dumps({**me.record(), "port": 1}))
    assert registry.address(state) is None
