"""`up` and `down` of both clusters: the order components start in, what each waits on, and a
teardown that leaves no process, mount, cgroup, bridge or iptables chain of ours behind.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import time

import proxy
import registries
from apiserver import apiserver_ready, kubectl, nodes_ready, start_apiserver
from containerd import start_containerd
from controllers import healthz_ok, start_controllers
from etcd import etcd_healthy, start_etcd
from kubelet import kube_proxy_ready, start_kube_proxy, start_kubelet
from kwok import reconcile_kwok_nodes, start_kwok
from layout import (
    BRIDGE,
    CACHE,
    CGROUP_ROOT,
    CLUSTERS,
    COMPONENTS,
    CRICTL_BIN,
    ETCD_BIN,
    HERE,
    K8S_BIN,
    KUBE_PROXY,
    KUBECTL,
    KWOK_ANNOTATION,
    KWOK_BIN,
    KWOK_STAGES,
    PAUSE_BIN,
    PAUSE_IMAGE,
    REAL_NODE,
    RUN,
    STATE,
    VERSIONS,
    Unsupported,
    containerd_sock,
    kubeconfig,
    log,
)
from node import bridge_exists, cgroup_controllers, pod_pids, remove_bridge, remove_cgroups
from pki import ensure_pki
from probes import port_free
from processes import kill, pids_matching, running_pid, stop, wait_for


def preflight() -> None:
    if os.geteuid() != 0:
        raise Unsupported("must run as root (kubelet, containerd, mounts, cgroups)")
    missing = [t for t in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "openssl", "ip", "iptables")
               if not shutil.which(t)]
    missing += [p for p in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback",
                            "/usr/lib/cni/portmap")
                if not os.path.exists(p)]
    if missing:
        raise Unsupported("missing " + ", ".join(missing) + ": apt-get install containerd runc "
                          "containernetworking-plugins iproute2 iptables openssl")
    if not any(h.name == "memory" or "memory" in h.name.split(",") for h in cgroup_controllers()):
        raise Unsupported("no cgroup v1 memory hierarchy mounted under /sys/fs/cgroup")


def ensure_binaries() -> None:
    have = all(p.exists() for p in (K8S_BIN / "kubelet", K8S_BIN / "kube-apiserver", KUBE_PROXY, ETCD_BIN, KWOK_BIN,
                                     KWOK_STAGES / "pod-ready.yaml", CRICTL_BIN, PAUSE_BIN, KUBECTL))
    if have and all((CACHE / d / ".done").exists() for d in (
            f"kubernetes-{VERSIONS['KUBERNETES_VERSION']}", f"etcd-{VERSIONS['ETCD_VERSION']}",
            f"kwok-{VERSIONS['KWOK_VERSION']}", f"crictl-{VERSIONS['CRICTL_VERSION']}", "pause")):
        return
    if not shutil.which("go") and os.path.exists("/usr/local/go/bin/go"):
        os.environ["PATH"] = "/usr/local/go/bin:" + os.environ.get("PATH", "")  # a bare root shell
    if not shutil.which("go"):
        raise Unsupported(f"binaries are not cached under {CACHE} and there is no Go toolchain to build them")
    log(f"binaries missing under {CACHE}: building them (a cold machine: ~8 min with CI=true "
        "on 2 cores, up to ~20 min with the default -p=1 on a busy machine)")
    subprocess.run(["bash", str(HERE / "build.sh")], check=True)


def write_info(kwok_nodes: dict[str, list[str]]) -> dict:
    info = {
        "versions": VERSIONS,
        "kubectl": str(KUBECTL),
        "crictl": str(CRICTL_BIN),
        "containerd_socket": str(containerd_sock()),
        "clusters": {
            name: {
                "kubeconfig": str(kubeconfig(name)),
                "context": f"cairn-{name}",
                "server": f"https://127.0.0.1:{c['apiserver']}",
                "real_nodes": [REAL_NODE] if c["real_node"] else [],
                "kwok_nodes": kwok_nodes.get(name, []),
            } for name, c in CLUSTERS.items()
        },
        # App images come from a registry (K8sClusters.pull_from); only the sandbox is local.
        "images": {"pause": PAUSE_IMAGE},
        "registry_hosts_dir": str(registries.hosts_dir(STATE)),
        "kwok": {"annotation": "=".join(KWOK_ANNOTATION),
                 "toleration": {"key": KWOK_ANNOTATION[0], "operator": "Equal", "value": KWOK_ANNOTATION[1],
                                "effect": "NoSchedule"},
                 "node_selector": {"type": "kwok"}},
    }
    (STATE / "cluster.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def up(kwok_nodes: int | None, kwok_nodes_b: int | None) -> dict:
    t0 = time.monotonic()
    preflight()
    ensure_binaries()
    if not any(running_pid(n, c) for n, comps in COMPONENTS.items() for c in comps):
        # Nothing of ours runs (first use, a reboot, a crash): start from a clean slate
        # rather than from a previous run's etcd data and half-torn-down node.
        if STATE.exists() or RUN.exists() or leftover_report():
            log("no cluster running: clearing what a previous run left")
            down(keep_state=False)
    STATE.mkdir(parents=True, exist_ok=True)
    os.chmod(STATE, 0o755)
    # Ports held by something that is not ours would make a component crash-loop.
    for name, c in CLUSTERS.items():
        for key in ("etcd", "etcd_peer", "apiserver", "kcm", "scheduler", "kwok"):
            comp = {"etcd_peer": "etcd", "apiserver": "kube-apiserver", "kcm": "kube-controller-manager",
                    "scheduler": "kube-scheduler"}.get(key, key)
            if not running_pid(name, comp) and not port_free(c[key]):
                raise RuntimeError(f"port {c[key]} (cluster {name} {key}) is in use by another process")

    for name in CLUSTERS:
        ensure_pki(name)
        start_etcd(name)
    for name in CLUSTERS:
        wait_for(f"{name}/etcd health", lambda n=name: etcd_healthy(n), 60, name, "etcd")
        start_apiserver(name)
    # The runtime and the image import need nothing from the apiservers: overlap them.
    start_containerd()
    for name in CLUSTERS:
        wait_for(f"{name}/kube-apiserver /readyz", lambda n=name: apiserver_ready(n), 120, name,
                 "kube-apiserver")
        start_controllers(name)
        start_kwok(name)
    start_kubelet()
    start_kube_proxy()

    counts = {"a": kwok_nodes if kwok_nodes is not None else CLUSTERS["a"]["kwok_nodes"],
              "b": kwok_nodes_b if kwok_nodes_b is not None else CLUSTERS["b"]["kwok_nodes"]}
    fake = {name: reconcile_kwok_nodes(name, counts[name]) for name in CLUSTERS}
    for name in CLUSTERS:
        expect = fake[name] + ([REAL_NODE] if CLUSTERS[name]["real_node"] else [])
        comp = ("kwok", "kubelet") if CLUSTERS[name]["real_node"] else ("kwok",)
        wait_for(f"{name} nodes Ready ({len(expect)})", lambda n=name, e=expect: nodes_ready(n, e), 120, name, comp)
        for comp, port in (("kube-controller-manager", "kcm"), ("kube-scheduler", "scheduler")):
            wait_for(f"{name}/{comp} /healthz", lambda p=CLUSTERS[name][port]: healthz_ok(p), 60, name, comp)
        if CLUSTERS[name]["real_node"]:
            wait_for(f"{name}/kube-proxy /healthz (rules synced)", kube_proxy_ready, 60, name, "kube-proxy")
        # The controller-manager creates the default service account every pod needs.
        wait_for(f"{name} default service account",
                 lambda n=name: kubectl(n, "get", "serviceaccount", "default", check=False).returncode == 0,
                 60, name, "kube-controller-manager")
    info = write_info(fake)
    log(f"up in {time.monotonic() - t0:.1f}s: kubeconfigs {kubeconfig('a')} and {kubeconfig('b')}")
    return info


def _mounts_under(*prefixes: pathlib.Path) -> list[str]:
    out = []
    for line in pathlib.Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if any(mnt == str(p) or mnt.startswith(str(p) + "/") for p in prefixes):
            out.append(mnt)
    return sorted(set(out), key=lambda m: -m.count("/"))


def down(keep_state: bool) -> None:
    # Stop the node first so the kubelet does not restart what we remove under it.
    stop("a", "kubelet")
    stop("a", "kube-proxy")
    said = proxy.cleanup(KUBE_PROXY)
    if said:
        log(f"kube-proxy --cleanup: {said}")
    sock = containerd_sock()
    if running_pid("a", "containerd") and CRICTL_BIN.exists():
        # Let the runtime tear pods down properly: that releases CNI IPs and netns.
        subprocess.run([str(CRICTL_BIN), f"--runtime-endpoint=unix://{sock}", "--timeout=30s",
                        "rmp", "--all", "--force"], capture_output=True, text=True, timeout=120)
    stop("a", "containerd")
    # Shims (and containers under them) outlive containerd by design: find them by our socket.
    kill(pids_matching(str(sock)), "containerd-shim", 10)
    for name in CLUSTERS:
        for comp in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            stop(name, comp)
    # Anything still holding one of our paths (a stray process from a crashed run).
    kill(pids_matching(str(STATE) + "/") + pids_matching(str(RUN) + "/"), "leftover", 10)
    # Containers whose shim was gone (a crash): they would pin their cgroups.
    kill(pod_pids(), "orphaned container process", 5)
    for m in _mounts_under(STATE, RUN):
        r = subprocess.run(["umount", m], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True, text=True)
    remove_cgroups()
    remove_bridge()
    shutil.rmtree(RUN, ignore_errors=True)
    if not keep_state:
        shutil.rmtree(STATE, ignore_errors=True)
    leftovers = leftover_report()
    if leftovers:
        raise RuntimeError("down left things behind:\n  " + "\n  ".join(leftovers))
    log("down: no process, mount, cgroup or bridge left")


def leftover_report() -> list[str]:
    out = []
    pids = pids_matching(str(STATE) + "/") + pids_matching(str(RUN) + "/")
    out += [f"process {p}" for p in pids]
    out += [f"mount {m}" for m in _mounts_under(STATE, RUN)]
    out += [f"cgroup {h / CGROUP_ROOT}" for h in cgroup_controllers(with_unified=True)
            if (h / CGROUP_ROOT).exists()]
    if bridge_exists():
        out.append(f"link {BRIDGE}")
    if shutil.which("iptables"):
        out += proxy.leftover_chains()
    return out

