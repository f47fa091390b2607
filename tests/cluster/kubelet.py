"""The node agents of cluster a's real node: the kubelet (cgroupfs driver on cgroup v1) and
kube-proxy (iptables mode; proxy.py holds what makes it fit a shared machine).
"""

from __future__ import annotations

import json

import proxy
from layout import (
    CGROUP_ROOT,
    K8S_BIN,
    KUBE_PROXY,
    KUBELET_HEALTHZ,
    KUBELET_PORT,
    NODE_IP,
    POD_SUBNET,
    REAL_NODE,
    cdir,
    containerd_sock,
    kubeconfig,
)
from probes import http_get
from processes import start, stop


def start_kubelet() -> None:
    pki = cdir("a") / "pki"
    kubelet_dir = cdir("a") / "kubelet"
    kubelet_dir.mkdir(parents=True, exist_ok=True)
    kcfg = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": NODE_IP, "port": KUBELET_PORT, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": KUBELET_HEALTHZ,
        "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"x509": {"clientCAFile": str(pki / "ca.crt")}, "webhook": {"enabled": True},
                           "anonymous": {"enabled": False}},
        "authorization": {"mode": "Webhook"},
        # cgroup v1 with the cgroupfs driver (no systemd on this machine); every pod cgroup
        # goes below /cairn-k8s in each hierarchy so down can remove exactly ours.
        "cgroupDriver": "cgroupfs", "cgroupRoot": f"/{CGROUP_ROOT}", "cgroupsPerQOS": True,
        "containerRuntimeEndpoint": f"unix://{containerd_sock()}",
        "podLogsDir": str(cdir("a") / "pod-logs"),
        "failSwapOn": False,
        "registerNode": True,
        # The sandbox image cannot be pulled again (it is imported, sandbox.py), and the app images
        # come from a registry that lives only as long as a test session: never garbage-collect them.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        # The disk and memory are shared with other work: evict only when truly short.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "maxPods": 110,
        "serializeImagePulls": False,
        "shutdownGracePeriod": "0s",
        # Default -999 needs CAP_SYS_RESOURCE, which this machine withholds.
        "oomScoreAdj": 0,
        "nodeStatusReportFrequency": "10s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "protectKernelDefaults": False,
        "localStorageCapacityIsolation": True,
    }
    (cdir("a") / "kubelet.yaml").write_text(json.dumps(kcfg, indent=2) + "\n")
    start("a", "kubelet", [
        str(K8S_BIN / "kubelet"), f"--config={cdir('a') / 'kubelet.yaml'}",
        f"--kubeconfig={kubeconfig('a', 'kubelet')}", f"--root-dir={kubelet_dir}",
        f"--hostname-override={REAL_NODE}", f"--node-ip={NODE_IP}",
        "--node-labels=cairn.dev/node-kind=real", "--v=1",
    ])


def start_kube_proxy() -> None:
    cfg = cdir("a") / "kube-proxy.yaml"
    if proxy.write_config(cfg, kubeconfig("a", "kube-proxy"), REAL_NODE, POD_SUBNET, NODE_IP):
        stop("a", "kube-proxy")  # it leaves by itself on a changed file: make that a clean restart
    start("a", "kube-proxy", proxy.argv(KUBE_PROXY, cfg))


def kube_proxy_ready() -> bool:
    return http_get(f"http://127.0.0.1:{proxy.HEALTHZ_PORT}/healthz")[0] == 200

