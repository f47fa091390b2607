"""Running a command inside a live container: ``runc exec`` with the container's own process spec.

Used for exec, shell, exec health checks and lifecycle hooks, so all of them see exactly what
the app sees: its namespaces (``localhost`` is the app), its root and mounts, its cwd, its user,
capabilities, seccomp profile and limits, and its environment with the secret variables, which
travel inside the process spec's pipe (runc.py), never a file or argv.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cairn.runtime import ExecResult
from cairn.runtimes.local import oci
from cairn.runtimes.local.container import Container


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def secrets_of(pid: int, names: Iterable[str]) -> dict[str, str]:
    """The secret variables as the app's own environment holds them (read by root only)."""
    env = environ(pid)
    return {name: env[name] for name in names if name in env}


def run(container: Container, spec: dict[str, Any], command: Sequence[str], secrets: Mapping[str, str], *,
        timeout_s: float) -> ExecResult:
    """Run ``command`` in the container; a timeout kills it and gives exit code 124."""
    if not container.running():
        return ExecResult(126, "", "the instance is not running")
    result: ExecResult = container.runc.exec(container.id, oci.exec_process(spec, list(command), secrets), timeout_s=timeout_s)
    return result
