"""Flow runs fork from the warm start server, and start cold (and still work) when it is gone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cairn.plan import PauseMode
from cairn.status import Status
from tests.test_release import create, register, versions

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def run_parents(order: str, timeout_s: float = 60) -> set[int]:
    """The parent pids of the processes that carry flow run ``order`` in their environment at exec:
    the warm start client or, started cold, the engine itself (both children of the worker)."""
    needle = f"PREFECT__FLOW_RUN_ID={order}".encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        parents = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    parents.add(int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]))
            except OSError:
                continue
        if parents:
            return parents
        time.sleep(0.1)
    raise AssertionError(f"no process runs flow run {order}")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def paused_release(app: str, version: str, warm_pid: int) -> tuple[set[int], list[int]]:
    """Parents of the processes started for the run (/proc/PID/environ shows a process's environment
    at exec, so a forked engine is not among them), and the warm server's children, while paused."""
    from cairn.orders import actions

    order = create(app, version, 2, PauseMode.FIRST_BATCH)
    actions.wait_for(order, {Status.PAUSED}, 240)
    seen = run_parents(order), children(warm_pid)  # a hot pause: the run's processes are still there
    actions.resume(order)
    actions.wait_for(order, {Status.COMPLETED}, 240)
    return seen


def test_runs_fork_from_the_warm_server_and_start_cold_without_it(platform: str, tmp_path: Path) -> None:
    from cairn.controlplane.processes import ensure_warm_start, processes, stop_process_group
    from cairn.orders import actions

    warm = processes()["warm_start"]
    assert warm["running"], warm
    app = register(tmp_path, instances=2)
    actions.wait_for(create(app, "v1", 1, PauseMode.NONE), {Status.COMPLETED}, 240)

    worker = processes()["worker"]["pid"]
    parents, forked = paused_release(app, "v2", warm["pid"])
    assert parents == {worker} and len(forked) == 1, "the run's engine is not a child of the warm start server"
    assert versions(app) == {0: "v2", 1: "v2"}

    stop_process_group(warm["pid"])
    try:
        assert not processes()["warm_start"]["running"]
        parents, forked = paused_release(app, "v3", warm["pid"])
        assert parents == {worker} and forked == [], "a cold start runs the engine in the worker's own child"
        assert versions(app) == {0: "v3", 1: "v3"}
    finally:
        ensure_warm_start(os.environ["PREFECT_API_URL"])
    assert processes()["warm_start"]["running"]
