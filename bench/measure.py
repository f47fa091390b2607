"""What the benches measure with: repeated timing of a command, percentiles, memory of process
trees, and the machine's load (the machine is shared, so every figure is printed beside it)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: with few samples, a measured value rather than an interpolation."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


def time_command(argv: Sequence[str], runs: int, *, env: dict[str, str] | None = None, warmup: int = 1) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) seconds of ``runs`` runs of a command, stdout discarded, after
    ``warmup`` untimed runs that fill the page cache as a user's second call would find it. CPU
    time is what a shared, loaded machine distorts least."""
    walls, cpus = [], []
    for k in range(warmup + runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        proc = subprocess.run(list(argv), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=300)
        took = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        if k >= warmup:
            walls.append(took)
            cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def summary(times: Sequence[float]) -> str:
    return f"median {statistics.median(times) * 1000:.0f} ms, p95 {percentile(times, 95) * 1000:.0f} ms (n={len(times)})"


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def tree_pids(pid: int) -> list[int]:
    tree, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(tree.get(p, []))
    return out


def rss_mib(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def tree_rss_mib(pid: int | None) -> float:
    return rss_mib(tree_pids(pid)) if pid else 0.0


Pids = Callable[[], Sequence[int]]


def tree(pid: int) -> Pids:
    """A process and everything it started (the server and its children, the agent and its shims)."""
    return lambda: tree_pids(pid)


def alone(pid: int) -> Pids:
    return lambda: [pid]


def _with_home(home: str) -> list[tuple[int, bytes]]:
    """(pid, command line) of every process whose command line names a path under ``home``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if home.encode() in cmdline:
            found.append((int(entry.name), cmdline))
    return found


def flow_runs(worker: int, home: str) -> Pids:
    """The flow run processes: the worker's children, and (with the warm start) the pre-imported
    template process under ``home`` and the runs forked from it, which are not the worker's. Not
    the local agent's shims, whose command lines name the agent's state directory under ``home``
    too (``agent`` counts them)."""
    agent_state = f"{home.rstrip('/')}/agent".encode()

    def pids() -> list[int]:
        found = set(tree_pids(worker)[1:])
        found.update(pid for pid, cmdline in _with_home(home) if agent_state not in cmdline)
        return sorted(found)

    return pids


def agent(pid: int, home: str) -> Pids:
    """The local agent and what runs its instances: the shims (detached from the agent, so not in
    its tree; their command lines name its state directory under ``home``) and their apps."""
    agent_state = f"{home.rstrip('/')}/agent".encode()

    def pids() -> list[int]:
        found = set(tree_pids(pid))
        for shim, cmdline in _with_home(home):
            if agent_state in cmdline:
                found.update(tree_pids(shim))
        return sorted(found)

    return pids


class PeakRss:
    """Samples the RSS of named groups of processes every ``period_s`` in a thread; keeps each
    group's peak, and at the peak of the sum how many processes a group had (``count``)."""

    def __init__(self, groups: dict[str, Pids], period_s: float = 0.5) -> None:
        self.groups = groups
        self.peak: dict[str, float] = {name: 0.0 for name in groups}
        self.count: dict[str, int] = {name: 0 for name in groups}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period_s,), daemon=True)

    def _run(self, period_s: float) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(period_s)

    def sample(self) -> None:
        for name, pids in self.groups.items():
            found = pids()
            value = rss_mib(found)
            if value > self.peak[name]:
                self.peak[name], self.count[name] = value, len(found)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
            f"Python {platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M %Z')}")
