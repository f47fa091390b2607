"""Starting, stopping and inspecting the local agent: the functions ``cairn agent ...`` calls.

All three are idempotent: starting a running agent returns its status, stopping a stopped one
is a no-op. Stopping leaves instances running (they belong to their shims); ``purge=True``
stops them too and removes the bridge, as ``cairn agent stop --purge`` should.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cairn.errors import PermanentError
from cairn.procs import ProcessRef
from cairn.runtimes.local import cgroups
from cairn.runtimes.local.node import Node
from cairn.runtimes.local.state import default_state_dir

START_TIMEOUT_S = 20.0


def _ask(state: Path, method: str, path: str, timeout: float | None = 5) -> dict[str, Any] | None:
    sock = state / "agent.sock"
    if not sock.exists():
        return None
    try:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock), verify=False), base_url="http://cairn-agent", timeout=timeout) as c:
            response = c.request(method, path)
            return response.json() if response.status_code == 200 else None
    except (httpx.TransportError, OSError):
        return None


def _agent(state: Path) -> ProcessRef | None:
    """The agent process ``agent.pid`` names (``pid start``), if it still runs: a pid the agent
    left behind when it was killed may belong to another process by now, which is never stopped.
    A file with a pid alone (an agent from before start times were recorded) is believed only if
    the agent answering on the socket reports that pid."""
    try:
        fields = (state / "agent.pid").read_text().split()
        pid = int(fields[0])
        start = int(fields[1]) if len(fields) > 1 else None
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if start is None:
        answer = _ask(state, "GET", "/status")
        return ProcessRef.of(pid) if answer and answer.get("pid") == pid else None
    ref = ProcessRef(pid, start)
    return ref if ref.alive() else None


def agent_status(state_dir: Path | str | None = None) -> dict[str, Any]:
    """``{"running", "pid", "socket", "state_dir", "instances", "cgroups", "cgroups_problem"}``."""
    state = default_state_dir(state_dir)
    answer = _ask(state, "GET", "/status")
    if answer:
        return answer
    problem = cgroups.problem()
    instances = sum(1 for _ in state.glob("envs/*/*/*/instances/*"))
    return {
        "running": False, "pid": None, "socket": str(state / "agent.sock"), "state_dir": str(state),
        "instances": instances, "cgroups": problem is None, "cgroups_problem": problem,
    }


def start_agent(state_dir: Path | str | None = None) -> dict[str, Any]:
    """Start the agent detached (it outlives the caller) and return its status; no-op when running."""
    state = default_state_dir(state_dir)
    current = agent_status(state)
    if current["running"]:
        return current
    state.mkdir(parents=True, exist_ok=True)
    with (state / "agent.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.runtimes.local.agent", "--state-dir", str(state), "--daemon"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
    proc.wait()  # the launcher forks the agent off and exits at once
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        status = agent_status(state)
        if status["running"]:
            return status
        time.sleep(0.1)
    tail = (state / "agent.log").read_text(errors="replace").strip().splitlines()[-5:]
    raise PermanentError(f"the local agent did not answer within {START_TIMEOUT_S:g} s: {' | '.join(tail)}",
                         hint=f"see {state / 'agent.log'}")


def stop_agent(state_dir: Path | str | None = None, *, purge: bool = False) -> dict[str, Any]:
    """Stop the agent; instances keep running unless ``purge``. Returns ``{"stopped", "purged"}``."""
    state = default_state_dir(state_dir)
    purged = 0
    if purge:
        answer = _ask(state, "POST", "/purge", timeout=None)
        purged = answer["purged"] if answer else Node(state).purge()
    agent = _agent(state)
    if agent is None:
        return {"stopped": False, "purged": purged}
    os.kill(agent.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while agent.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if agent.alive():
        os.kill(agent.pid, signal.SIGKILL)
    return {"stopped": True, "purged": purged}
