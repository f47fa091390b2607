"""kube-apiserver, and how the other modules talk to it: its readiness, kubectl, node readiness."""

from __future__ import annotations

import json
import subprocess

from layout import CLUSTERS, K8S_BIN, KUBECTL, SERVICE_CIDR, cdir, kubeconfig
from probes import https_get
from processes import start


def start_apiserver(cluster: str) -> None:
    c, pki = CLUSTERS[cluster], cdir(cluster) / "pki"
    argv = [
        str(K8S_BIN / "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{c['etcd']}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={c['apiserver']}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC", "--allow-privileged=true", "--profiling=false",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        "--event-ttl=30m", "--v=1",
    ]
    start(cluster, "kube-apiserver", argv)


def apiserver_ready(cluster: str) -> bool:
    code, _ = https_get(f"https://127.0.0.1:{CLUSTERS[cluster]['apiserver']}/readyz", cluster)
    return code == 200


def kubectl(cluster: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBECTL), f"--kubeconfig={kubeconfig(cluster)}", *args], input=input,
                          capture_output=True, text=True, check=check, timeout=timeout)


def nodes_ready(cluster: str, names: list[str]) -> bool:
    out = kubectl(cluster, "get", "nodes", "-o", "json", check=False)
    if out.returncode != 0:
        return False
    ready = {
        n["metadata"]["name"]
        for n in json.loads(out.stdout)["items"]
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"].get("conditions", []))
    }
    return all(n in ready for n in names)

