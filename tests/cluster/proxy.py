"""kube-proxy (iptables mode) on cluster a's real node: Service ClusterIPs route to pods.

Stdlib only, like cluster.py; kubelet.py starts the process and owns its pid file. What is here is
what makes kube-proxy fit a machine shared with other work:

- the pod network: pods reach the Service range through the bridge's address (a CNI route),
  and only packets *arriving on our bridge* may be forwarded
  (``net.ipv4.conf.<bridge>.forwarding=1``; the machine's ``ip_forward`` stays off), with ICMP
  redirects off on the bridge (the host would otherwise tell a client pod to go around it);
- ``masqueradeAll``: a pod talking to a Service whose backend sits on the same bridge would get
  the answer straight from the backend's address and drop it; masquerading makes the answer
  come back through the host, where conntrack undoes the NAT. (br_netfilter would do it too,
  but it turns on iptables for every bridge of the machine);
- nothing machine-wide it would otherwise tune: no conntrack table sizes or timeouts, no
  ``route_localnet`` (no NodePorts on 127.0.0.1), NodePorts only on the bridge's address,
  ``oomScoreAdj`` 0 (this machine withholds CAP_SYS_RESOURCE);
- ``cleanup``: ``kube-proxy --cleanup`` removes every rule and chain it made, for ``down``.
"""

from __future__ import annotations

import json
import pathlib
import subprocess

HEALTHZ_PORT = 16256
METRICS_PORT = 16249


def config(kubeconfig: pathlib.Path, node: str, cluster_cidr: str, node_ip: str) -> dict:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig), "qps": 50, "burst": 100},
        "hostnameOverride": node,
        "clusterCIDR": cluster_cidr,
        "detectLocalMode": "ClusterCIDR",
        "bindAddress": node_ip,
        "healthzBindAddress": f"127.0.0.1:{HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{METRICS_PORT}",
        "nodePortAddresses": [f"{node_ip}/32"],
        "oomScoreAdj": 0,
        # 0 = leave the machine's conntrack settings as they are.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # minSyncPeriod stays kube-proxy's default (1 s): cairn's drain_s is measured against it.
        "iptables": {"masqueradeAll": True, "localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "1s"},
    }


def write_config(path: pathlib.Path, kubeconfig: pathlib.Path, node: str, cluster_cidr: str, node_ip: str) -> bool:
    """Write it when it changed; whether it did. kube-proxy watches its configuration file and
    exits when it is written, even with the same content, so a rewrite by every `up` would stop it."""
    text = json.dumps(config(kubeconfig, node, cluster_cidr, node_ip), indent=2) + "\n"
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def argv(binary: pathlib.Path, config_path: pathlib.Path) -> list[str]:
    return [str(binary), f"--config={config_path}", "--v=1"]


def bridge_sysctls(bridge: str) -> dict[str, str]:
    """Per-bridge settings: forwarding only for packets that arrive on the bridge."""
    return {f"net/ipv4/conf/{bridge}/forwarding": "1", f"net/ipv4/conf/{bridge}/send_redirects": "0"}


def apply_sysctls(values: dict[str, str]) -> None:
    for key, value in values.items():
        path = pathlib.Path("/proc/sys") / key
        if path.exists() and path.read_text().strip() != value:
            path.write_text(value + "\n")


def cni_routes(service_cidr: str, gateway: str) -> list[dict[str, str]]:
    """The pod's one route off the bridge: to the Service range, through the host."""
    return [{"dst": service_cidr, "gw": gateway}]


def cleanup(binary: pathlib.Path) -> str:
    """Remove kube-proxy's iptables rules and chains; "" when clean, else what it said."""
    if not binary.exists():
        return ""
    proc = subprocess.run([str(binary), "--cleanup", "--v=0"], capture_output=True, text=True, timeout=60)
    return "" if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()[-500:]


def leftover_chains() -> list[str]:
    """kube-proxy chains still in the nat or filter table (the kubelet's canaries are not ours)."""
    out = []
    for table in ("nat", "filter"):
        proc = subprocess.run(["iptables", "-t", table, "-S"], capture_output=True, text=True)
        out += [f"iptables {table} {line.split()[1]}" for line in proc.stdout.splitlines()
                if line.startswith("-N KUBE-") and "CANARY" not in line and "KUBE-FIREWALL" not in line]
    return out
