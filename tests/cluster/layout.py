"""Where the test clusters live: versions, cache/state/run paths, ports and addresses.

Every other module of tests/cluster reads its paths and numbers from here, so two clusters
side by side (and a developer's own cluster on default ports) never collide.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
STATE = pathlib.Path(os.environ.get("CAIRN_K8S_STATE", "/var/lib/cairn-k8s"))
RUN = pathlib.Path(os.environ.get("CAIRN_K8S_RUN", "/run/cairn-k8s"))
CACHE = pathlib.Path(os.environ.get("CAIRN_K8S_CACHE", "/var/cache/cairn-k8s"))
CGROUP_ROOT = "cairn-k8s"  # kubelet's cgroupRoot: every pod cgroup lives below it
CGROUP_FS = pathlib.Path("/sys/fs/cgroup")

EXIT_UNSUPPORTED = 3


def _versions() -> dict[str, str]:
    out = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


VERSIONS = _versions()
K8S_BIN = CACHE / f"kubernetes-{VERSIONS['KUBERNETES_VERSION']}" / "bin"
ETCD_BIN = CACHE / f"etcd-{VERSIONS['ETCD_VERSION']}" / "bin" / "etcd"
KWOK_BIN = CACHE / f"kwok-{VERSIONS['KWOK_VERSION']}" / "bin" / "kwok"
KWOK_STAGES = CACHE / f"kwok-{VERSIONS['KWOK_VERSION']}" / "stages"
CRICTL_BIN = CACHE / f"crictl-{VERSIONS['CRICTL_VERSION']}" / "bin" / "crictl"
PAUSE_BIN = CACHE / "pause" / "bin" / "pause"
KUBECTL = K8S_BIN / "kubectl"
KUBE_PROXY = K8S_BIN / "kube-proxy"

# Ports: cluster a uses 1xxxx, cluster b 2xxxx, so both run side by side and do not
# collide with a default-port cluster anyone else may run.
CLUSTERS = {
    "a": {"etcd": 12379, "etcd_peer": 12380, "apiserver": 16443, "kcm": 16257,
          "scheduler": 16259, "kwok": 16247, "real_node": True, "kwok_nodes": 4},
    "b": {"etcd": 22379, "etcd_peer": 22380, "apiserver": 26443, "kcm": 26257,
          "scheduler": 26259, "kwok": 26247, "real_node": False, "kwok_nodes": 2},
}
# What runs in each cluster (the pid files `status` reads and `up` checks).
COMPONENTS = {
    "a": ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "containerd", "kubelet",
          "kube-proxy"],
    "b": ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"],
}
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
# The real node's pods live on a bridge this script creates. The kubelet refuses a
# loopback node IP, so the node's InternalIP is the bridge's own address: the
# apiserver's exec/logs traffic to the kubelet stays on this machine.
# Not "cairn0": the local runtime (runtimes/local/netns.py) owns that bridge.
BRIDGE = "cairnk8s0"
POD_SUBNET = "10.223.0.0/24"
NODE_IP = "10.223.0.1"
KUBELET_PORT = 16250
KUBELET_HEALTHZ = 16248
REAL_NODE = "cairn-a-real"
# kwok's fake pod IPs: never contacted, only written into pod status.
KWOK_POD_CIDR = "10.224.0.0/16"
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")

PAUSE_IMAGE = "cairn.local/pause:1.0"


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Unsupported(Exception):
    """This machine cannot run the cluster at all (as opposed to a broken cluster)."""


def cdir(name: str) -> pathlib.Path:
    return STATE / name


def kubeconfig(name: str, user: str = "admin") -> pathlib.Path:
    return cdir(name) / f"{user}.kubeconfig"


def containerd_sock() -> pathlib.Path:
    return RUN / "containerd" / "containerd.sock"


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    """A set-up command that must succeed; its stderr goes into the failure `main` prints."""
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)
