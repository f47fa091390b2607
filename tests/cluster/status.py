"""`status`: what runs, how much memory it holds, and whether both clusters are healthy."""

from __future__ import annotations

import json

from apiserver import apiserver_ready, kubectl, nodes_ready
from layout import CGROUP_FS, CGROUP_ROOT, CLUSTERS, COMPONENTS, STATE, containerd_sock, kubeconfig
from processes import pids_matching, rss_kib, running_pid


def status() -> dict:
    comps, healthy = {}, True
    for name, names in COMPONENTS.items():
        for comp in names:
            pid = running_pid(name, comp)
            comps[f"{name}/{comp}"] = {"pid": pid, "rss_mib": round(rss_kib(pid) / 1024, 1) if pid else 0}
            healthy &= bool(pid)
    shim_pids = pids_matching(str(containerd_sock()))
    shims_rss = sum(rss_kib(p) for p in shim_pids) / 1024
    ready = {}
    for name in CLUSTERS:
        try:
            ready[name] = apiserver_ready(name)
        except Exception:  # noqa: BLE001
            ready[name] = False
        healthy &= ready[name]
    info = {}
    if (STATE / "cluster.json").exists():
        info = json.loads((STATE / "cluster.json").read_text())
    if healthy and info:
        for name, c in info["clusters"].items():
            if not nodes_ready(name, c["real_nodes"] + c["kwok_nodes"]):
                healthy = False
    else:
        healthy = False
    total = sum(c["rss_mib"] for c in comps.values()) + shims_rss
    pods_mib = 0.0
    usage = CGROUP_FS / "memory" / CGROUP_ROOT / "kubepods" / "memory.usage_in_bytes"
    if usage.exists():  # the workload itself, page cache included, apart from the cluster
        pods_mib = int(usage.read_text()) / (1 << 20)
    return {"healthy": healthy, "apiserver_ready": ready, "components": comps,
            "shims": {"count": len(shim_pids), "rss_mib": round(shims_rss, 1)},
            "pods_memory_cgroup_mib": round(pods_mib, 1),
            "total_rss_mib": round(total, 1), "info": info}


def print_status(st: dict) -> None:
    print(f"cluster: {'healthy' if st['healthy'] else 'NOT healthy'}")
    for key, c in st["components"].items():
        print(f"  {key:28} {'pid ' + str(c['pid']) if c['pid'] else 'not running':14} {c['rss_mib']:8.1f} MiB")
    print(f"  {'containerd shims':28} {st['shims']['count']:<14} {st['shims']['rss_mib']:8.1f} MiB")
    print(f"  {'total RSS':28} {'':14} {st['total_rss_mib']:8.1f} MiB")
    print(f"  {'pods (memory cgroup)':28} {'':14} {st['pods_memory_cgroup_mib']:8.1f} MiB")
    for name, ok in st["apiserver_ready"].items():
        print(f"  apiserver {name}: {'ready' if ok else 'not ready'}  kubeconfig {kubeconfig(name)}")
    if st["healthy"]:
        for name in CLUSTERS:
            print(f"--- cluster {name}: kubectl --kubeconfig {kubeconfig(name)} get nodes")
            print(kubectl(name, "get", "nodes", "-o", "wide", check=False).stdout.rstrip())

