"""Running a command inside a live instance: nsenter into the app process's namespaces.

Used for exec, shell, exec health checks and lifecycle hooks, so all of them see exactly what
the app sees: its network namespace (``localhost`` is the app), its mounts and root (the deploy
root, file and directory mounts), its cwd and its environment (read from ``/proc/PID/environ``,
never stored).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cairn.runtime import ExecResult


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def argv(pid: int, command: Sequence[str]) -> list[str]:
    return ["nsenter", "-t", str(pid), "-n", "-m", "-u", "-r", "-w", "--", *command]


def run(pid: int, command: Sequence[str], *, timeout_s: float) -> ExecResult:
    """Run ``command`` in the instance of ``pid``; a timeout kills it and gives exit code 124."""
    try:
        env = environ(pid)
    except (FileNotFoundError, ProcessLookupError):
        return ExecResult(126, "", "the instance is not running")
    proc = subprocess.Popen(
        argv(pid, command), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        return ExecResult(124, out.decode(errors="replace"), err.decode(errors="replace") + f"\ntimed out after {timeout_s:g}s")
    return ExecResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
