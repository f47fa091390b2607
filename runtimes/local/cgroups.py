"""Where a local container's cgroup is, and what it says after an OOM kill, on cgroup v1 or v2.

runc writes the limits (oci.py puts them in the spec's ``linux.resources``) on either kind of
host; this module only names the path and reads what runc does not report. Each container's
cgroup nests under the agent's own (``<agent's cgroup>/cairn/<container id>``), so instances stay
inside whatever limits the agent itself runs under, as a kubelet's ``--cgroup-root`` does.

An OOM kill is told from any other SIGKILL by the kernel's counter in the container's memory
cgroup: ``oom_kill`` in ``memory.oom_control`` (v1) or in ``memory.events`` (v2). Read before
``runc delete``, which removes the cgroup.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


def version(root: Path = ROOT) -> int:
    """2 on a unified hierarchy (``cgroup.controllers`` at the root), else 1."""
    return 2 if (root / "cgroup.controllers").exists() else 1


def _own(controller: str, text: str | None = None) -> str:
    """This process's cgroup for ``controller`` (v1), or the unified one (v2: controller "")."""
    for line in (text if text is not None else Path("/proc/self/cgroup").read_text()).splitlines():
        hierarchy, names, path = line.split(":", 2)
        if (controller and controller in names.split(",")) or (not controller and hierarchy == "0" and names == ""):
            return path
    return "/"


def container_path(cid: str, cgroup_text: str | None = None, root: Path = ROOT) -> str:
    """The container's ``linux.cgroupsPath``: absolute, under the agent's own memory cgroup."""
    own = _own("memory" if version(root) == 1 else "", cgroup_text)
    return f"{own.rstrip('/')}/cairn/{cid}"


def memory_dir(path: str, root: Path = ROOT) -> Path:
    return root / ("memory" if version(root) == 1 else "") / path.lstrip("/")


def oom_kills(path: str, root: Path = ROOT) -> int:
    """How many times the kernel's OOM killer killed in the container's cgroup (0 if it is gone)."""
    directory = memory_dir(path, root)
    name = "memory.oom_control" if version(root) == 1 else "memory.events"
    try:
        text = (directory / name).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def problem(root: Path = ROOT) -> str | None:
    """Why runc could not enforce memory and CPU limits here, or None when it can."""
    if version(root) == 2:
        controllers = (root / "cgroup.controllers").read_text().split()
        missing = [c for c in ("memory", "cpu") if c not in controllers]
        if missing:
            return f"cgroup v2 controllers {', '.join(missing)} are not enabled at {root}; limits cannot be enforced"
        return None if os.access(root, os.W_OK) else f"{root} is not writable (run the agent as root)"
    for controller in ("memory", "cpu"):
        mount = root / controller
        if not (mount / "cgroup.procs").exists():
            return f"cgroup v1 {controller} controller is not mounted at {mount}; limits cannot be enforced"
        if not os.access(mount, os.W_OK):
            return f"{mount} is not writable (run the agent as root)"
    return None
