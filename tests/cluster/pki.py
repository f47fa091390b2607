"""Each cluster's PKI: one CA, the components' certificates, the service-account key pair,
and the kubeconfigs that use them. EC keys, because they are instant to generate.

Everything is created once and kept: `up` after `up` finds the files and skips them.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile

from layout import CLUSTERS, NODE_IP, REAL_NODE, SERVICE_IP, cdir, kubeconfig, run


def _cert(pki: pathlib.Path, name: str, subject: str, usage: str, sans: list[str] | None = None) -> None:
    if (pki / f"{name}.crt").exists():
        return
    ext = ["basicConstraints=critical,CA:FALSE",
           "keyUsage=critical,digitalSignature,keyEncipherment",
           f"extendedKeyUsage={usage}"]
    if sans:
        ext.append("subjectAltName=" + ",".join(sans))
    with tempfile.NamedTemporaryFile("w", suffix=".ext", delete=False) as f:
        f.write("\n".join(ext) + "\n")
    try:
        run(["openssl", "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"), "-subj", subject])
        run(["openssl", "x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / "ca.crt"),
             "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-sha256",
             "-extfile", f.name, "-out", str(pki / f"{name}.crt")])
    finally:
        os.unlink(f.name)
        (pki / f"{name}.csr").unlink(missing_ok=True)


def ensure_pki(cluster: str) -> None:
    """One CA per cluster, a certificate per component and user, their kubeconfigs."""
    pki = cdir(cluster) / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    if not (pki / "ca.crt").exists():
        run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:P-256", "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
             "-days", "3650", "-sha256", "-subj", f"/CN=cairn-{cluster}-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"])
    _cert(pki, "apiserver", f"/CN=cairn-{cluster}-apiserver", "serverAuth",
          ["IP:127.0.0.1", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
           "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local"])
    _cert(pki, "admin", "/O=system:masters/CN=cairn-admin", "clientAuth")
    _cert(pki, "kube-controller-manager", "/CN=system:kube-controller-manager", "clientAuth")
    _cert(pki, "kube-scheduler", "/CN=system:kube-scheduler", "clientAuth")
    _cert(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client", "clientAuth")
    if CLUSTERS[cluster]["real_node"]:
        _cert(pki, "kubelet", f"/O=system:nodes/CN=system:node:{REAL_NODE}", "clientAuth")
        # The bootstrap RBAC policy binds system:node-proxier to this user.
        _cert(pki, "kube-proxy", "/CN=system:kube-proxy", "clientAuth")
        _cert(pki, "kubelet-serving", f"/CN={REAL_NODE}", "serverAuth",
              [f"IP:{NODE_IP}", "IP:127.0.0.1", f"DNS:{REAL_NODE}", "DNS:localhost"])
    if not (pki / "sa.key").exists():
        run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key")])
        run(["openssl", "ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])
    for user in ("admin", "kube-controller-manager", "kube-scheduler") + (
            ("kubelet", "kube-proxy") if CLUSTERS[cluster]["real_node"] else ()):
        write_kubeconfig(cluster, user)


def write_kubeconfig(cluster: str, user: str) -> None:
    """JSON is YAML: kubectl and the Python client both read this."""
    pki = cdir(cluster) / "pki"
    ctx = f"cairn-{cluster}" if user == "admin" else f"cairn-{cluster}-{user}"
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": ctx,
        "clusters": [{"name": f"cairn-{cluster}", "cluster": {
            "server": f"https://127.0.0.1:{CLUSTERS[cluster]['apiserver']}",
            "certificate-authority": str(pki / "ca.crt")}}],
        "users": [{"name": f"cairn-{cluster}-{user}", "user": {
            "client-certificate": str(pki / f"{user}.crt"), "client-key": str(pki / f"{user}.key")}}],
        "contexts": [{"name": ctx, "context": {"cluster": f"cairn-{cluster}", "user": f"cairn-{cluster}-{user}",
                                               "namespace": "default"}}],
    }
    kubeconfig(cluster, user).write_text(json.dumps(cfg, indent=2) + "\n")
