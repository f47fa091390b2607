"""kube-controller-manager and kube-scheduler: no leader election, rates raised for scale tests."""

from __future__ import annotations

import json

from layout import CLUSTERS, K8S_BIN, SERVICE_CIDR, cdir, kubeconfig
from probes import https_get
from processes import start


def start_controllers(cluster: str) -> None:
    c, pki = CLUSTERS[cluster], cdir(cluster) / "pki"
    kcm_kc = kubeconfig(cluster, "kube-controller-manager")
    start(cluster, "kube-controller-manager", [
        str(K8S_BIN / "kube-controller-manager"),
        f"--kubeconfig={kcm_kc}", f"--authentication-kubeconfig={kcm_kc}",
        f"--authorization-kubeconfig={kcm_kc}",
        "--bind-address=127.0.0.1", f"--secure-port={c['kcm']}", "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}", f"--cluster-signing-key-file={pki / 'ca.key'}",
        "--use-service-account-credentials=true", f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Scale tests create hundreds of pods: the default 20 QPS makes that take minutes.
        "--kube-api-qps=200", "--kube-api-burst=400", "--concurrent-replicaset-syncs=10",
        "--profiling=false", "--v=1",
    ])
    sch_kc = kubeconfig(cluster, "kube-scheduler")
    cfg = cdir(cluster) / "scheduler.yaml"
    cfg.write_text(json.dumps({
        "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(sch_kc), "qps": 200, "burst": 400},
        "leaderElection": {"leaderElect": False},
    }) + "\n")
    start(cluster, "kube-scheduler", [
        str(K8S_BIN / "kube-scheduler"), f"--config={cfg}",
        f"--authentication-kubeconfig={sch_kc}", f"--authorization-kubeconfig={sch_kc}",
        "--bind-address=127.0.0.1", f"--secure-port={c['scheduler']}", "--profiling=false", "--v=1",
    ])


def healthz_ok(port: int) -> bool:
    """A controller's /healthz (self-signed serving certificate, loopback only)."""
    return https_get(f"https://127.0.0.1:{port}/healthz")[0] == 200
