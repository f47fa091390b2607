"""What cluster a's real node takes from this machine: cgroups and the pod bridge.

Pod cgroups all live below /cairn-k8s in each mounted hierarchy and the bridge is our own
(cairnk8s0), so `down` removes exactly ours and nothing of the machine's.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import proxy
from layout import BRIDGE, CGROUP_ROOT, NODE_IP, log, run


def cgroup_controllers(with_unified: bool = False) -> list[pathlib.Path]:
    """The machine's mounted cgroup hierarchies (never remounted, only used).

    v1 hierarchies get our cgroup root up front; the hybrid layout's empty cgroup2
    (/sys/fs/cgroup/unified) is only cleaned, since runc mirrors container cgroups there.
    """
    out = []
    for line in pathlib.Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and (parts[2] == "cgroup" or (with_unified and parts[2] == "cgroup2")):
            out.append(pathlib.Path(parts[1]))
    return out


def ensure_cgroup_root() -> None:
    for hier in cgroup_controllers():
        d = hier / CGROUP_ROOT
        if not d.exists():
            d.mkdir()
        # cpuset children start empty in v1 and would refuse tasks: inherit the parent's.
        for f in ("cpuset.cpus", "cpuset.mems"):
            if (hier / f).exists() and not (d / f).read_text().strip():
                (d / f).write_text((hier / f).read_text())


def remove_cgroups() -> None:
    for hier in cgroup_controllers(with_unified=True):
        top = hier / CGROUP_ROOT
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                log(f"cannot remove cgroup {dirpath}: {e}")


def pod_pids() -> list[int]:
    """Processes inside our pod cgroups: pods of this cluster and nothing else."""
    pids: set[int] = set()
    for hier in cgroup_controllers():
        top = hier / CGROUP_ROOT
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids.update(int(x) for x in procs.read_text().split())
                except OSError:
                    pass
    return sorted(pids)


def ensure_bridge() -> None:
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = run(["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f"{NODE_IP}/" not in addrs:
        run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
    run(["ip", "link", "set", BRIDGE, "up"])
    proxy.apply_sysctls(proxy.bridge_sysctls(BRIDGE))


def bridge_exists() -> bool:
    return subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0


def remove_bridge() -> None:
    if bridge_exists():
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
