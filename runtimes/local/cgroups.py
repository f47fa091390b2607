"""Memory and CPU limits through cgroup v1, as the kubelet sets them for a container.

Each instance gets ``<agent's cgroup>/cairn/<instance>`` under the memory and cpu controllers:
nesting under the agent's own cgroup (rather than the root) keeps instances inside whatever
limits the agent itself runs under, as a kubelet's ``--cgroup-root`` does. The memory limit is
enforced by the kernel's OOM killer; ``memory.oom_control``'s ``oom_kill`` counter tells an
OOM kill from any other SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu")
CFS_PERIOD_US = 100_000


def _mount(controller: str) -> Path | None:
    for candidate in (ROOT / controller, ROOT / "cpu,cpuacct"):
        if (candidate / "cgroup.procs").exists():
            return candidate
    return None


def _own(controller: str) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path
    return "/"


def problem() -> str | None:
    """Why limits cannot be enforced here, or None when they can."""
    for controller in CONTROLLERS:
        mount = _mount(controller)
        if mount is None:
            return f"cgroup v1 {controller} controller not mounted at {ROOT / controller}; memory and CPU limits are NOT enforced"
        if not os.access(mount, os.W_OK):
            return f"{mount} is not writable (run the agent as root); memory and CPU limits are NOT enforced"
    return None


def create(instance: str, memory_mb: int, cpu: float) -> dict[str, str]:
    """Create the instance's cgroups with its limits; returns controller -> directory."""
    paths: dict[str, str] = {}
    if problem():
        return paths
    for controller in CONTROLLERS:
        mount = _mount(controller)
        assert mount is not None
        path = mount / _own(controller).lstrip("/") / "cairn" / instance
        path.mkdir(parents=True, exist_ok=True)
        paths[controller] = str(path)
    memory = Path(paths["memory"])
    (memory / "memory.limit_in_bytes").write_text(str(memory_mb * 1024 * 1024))
    swap = memory / "memory.memsw.limit_in_bytes"
    if swap.exists():  # no swap escape: memory+swap capped at the same value
        swap.write_text(str(memory_mb * 1024 * 1024))
    cpu_dir = Path(paths["cpu"])
    (cpu_dir / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
    (cpu_dir / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpu * CFS_PERIOD_US))))
    return paths


def oom_kills(paths: dict[str, str]) -> int:
    if "memory" not in paths:
        return 0
    try:
        text = (Path(paths["memory"]) / "memory.oom_control").read_text()
    except FileNotFoundError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def pids(paths: dict[str, str]) -> list[int]:
    found: set[int] = set()
    for path in paths.values():
        try:
            found.update(int(p) for p in (Path(path) / "cgroup.procs").read_text().split())
        except FileNotFoundError:
            pass
    return sorted(found)


def kill_all(paths: dict[str, str]) -> None:
    for pid in pids(paths):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def remove(paths: dict[str, str]) -> None:
    """Kill what is left and remove the cgroups (rmdir fails while a task remains: retry briefly)."""
    deadline = time.monotonic() + 5
    for path in paths.values():
        while Path(path).exists():
            kill_all(paths)
            try:
                os.rmdir(path)
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
