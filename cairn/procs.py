"""Is this still the process we started? A pid together with its start time, read through psutil.

Every layer that records a process and comes back to it later (the platform's server, worker and
warm start server in ``$CAIRN_HOME/platform.json``, the local agent in ``agent.pid``, each shim
and app in its ``status.json``) asks here. A pid alone is handed to a new process once the old
one is gone (``/proc/sys/kernel/pid_max`` is 32768 on many machines), so ``kill(pid, 0)`` can
take a stranger for ours, and signalling it would stop someone else's process. The pid and its
start time together name one process for as long as the machine is up.

The start time is the kernel's: clock ticks since boot, the value of ``/proc/PID/stat`` field 22.
psutil reports it as wall-clock seconds (boot time + ticks); this module takes the boot time back
off, so a change of the wall clock (NTP stepping it, a suspend) never makes a live process look
dead, and the records the shims wrote before this module existed (ticks) compare as they are.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psutil

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def start_time(pid: int | None) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None when no such process
    runs (a zombie, which has exited and waits to be reaped, counts as gone)."""
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            created = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return round((float(created) - float(psutil.boot_time())) * _TICKS_PER_S)


def alive(pid: int | None, start: int | None) -> bool:
    """True when ``pid`` runs and is the process that started at ``start`` (never for a reused pid)."""
    return pid is not None and start is not None and start_time(pid) == start


@dataclass(frozen=True)
class ProcessRef:
    """One process, for the machine's uptime: what a state file records of a process it started."""

    pid: int
    start: int  # clock ticks since boot (see the module's docstring)

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        """The process running as ``pid`` now, or None."""
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> ProcessRef | None:
        """Read ``{"pid": ..., "start": ...}`` as :meth:`record` wrote it; None for anything else
        (a record without a start time names no process we can tell from a stranger)."""
        if not record:
            return None
        pid, start = record.get("pid"), record.get("start")
        if type(pid) is not int or type(start) is not int:
            return None
        return cls(pid, start)

    def record(self) -> dict[str, int]:
        return {"pid": self.pid, "start": self.start}

    def alive(self) -> bool:
        return alive(self.pid, self.start)


def listens(ref: ProcessRef, port: int) -> bool:
    """True when the process ``ref`` names, or one of its descendants, listens on TCP ``port``:
    that the server answering on a port is the one we started, not another that holds it."""
    if not ref.alive():
        return False
    try:
        root = psutil.Process(ref.pid)
        family = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return False
    for proc in family:
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in proc.net_connections("tcp")):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return False


def stop_group(ref: ProcessRef | None, timeout_s: float = 15) -> bool:
    """Stop the process group ``ref`` leads (it was started in a session of its own): SIGTERM, and
    SIGKILL if its leader has not exited within ``timeout_s``. Nothing is signalled unless the
    leader is still the process ``ref`` names. True when it was running and has stopped."""
    if ref is None:
        return False
    try:
        proc = psutil.Process(ref.pid)
    except psutil.NoSuchProcess:
        return False
    if not ref.alive():
        return False
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(ref.pid, sig)
        except ProcessLookupError:
            return True
        try:
            proc.wait(timeout_s)  # reaps it when it is our child; else waits for it to be gone
            return True
        except psutil.TimeoutExpired:
            continue
    return not ref.alive()
