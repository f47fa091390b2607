#!/usr/bin/env python3
"""cairn's test Kubernetes clusters: bring up, tear down, report.

Two clusters, both on loopback, both built from source by build.sh:

  a  etcd + kube-apiserver + kube-controller-manager + kube-scheduler,
     ONE real node (kubelet -> containerd -> runc, CNI bridge, cgroupfs driver on
     cgroup v1) and N kwok fake nodes (kwok manages only nodes annotated
     kwok.x-k8s.io/node=fake, so the real node stays its kubelet's).
  b  a second control plane with kwok nodes only, so "production" and "test" are
     really different clusters.

Used as `tests/cluster/up [--kwok-nodes N]`, `tests/cluster/down`, `tests/cluster/status`.
Everything is idempotent: `up` starts what is not running, `down` stops what is.
All state lives outside the repo (see README.md). Python 3.11 standard library only,
so it runs before any virtualenv exists.

Exit codes: 0 ok, 1 failure, 3 this machine cannot run the cluster (not root, tools
or packages missing): the pytest fixture turns 3 into a skip.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

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

DEMO_IMAGE = "cairn/demo-app:latest"
PYTHON_IMAGE = "cairn/python:3.11"
PAUSE_IMAGE = "cairn.local/pause:1.0"


def log(msg: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Unsupported(Exception):
    """This machine cannot run the cluster at all (as opposed to a broken cluster)."""


# --------------------------------------------------------------------------- paths

def cdir(name: str) -> pathlib.Path:
    return STATE / name


def kubeconfig(name: str, user: str = "admin") -> pathlib.Path:
    return cdir(name) / f"{user}.kubeconfig"


def containerd_sock() -> pathlib.Path:
    return RUN / "containerd" / "containerd.sock"


# ------------------------------------------------------------------ process control

def _start_time(pid: int) -> str | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces.
    return stat.rpartition(")")[2].split()[19]


def _pidfile(cluster: str, comp: str) -> pathlib.Path:
    return cdir(cluster) / "run" / f"{comp}.pid"


def running_pid(cluster: str, comp: str) -> int | None:
    """The component's pid if the very process we started is alive (pid reuse safe)."""
    try:
        pid_s, start = _pidfile(cluster, comp).read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    if _start_time(pid) != start:
        return None
    try:  # a zombie is not running
        if pathlib.Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z":
            return None
    except (OSError, IndexError):
        return None
    return pid


def start(cluster: str, comp: str, argv: list[str], env: dict | None = None) -> int:
    pid = running_pid(cluster, comp)
    if pid:
        return pid
    logdir = cdir(cluster) / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    (cdir(cluster) / "run").mkdir(parents=True, exist_ok=True)
    with open(logdir / f"{comp}.log", "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        # Own session: the component outlives `up` and never gets our terminal's signals.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cdir(cluster),
                                env={**os.environ, **(env or {})})
    _pidfile(cluster, comp).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    log(f"{cluster}/{comp} started (pid {proc.pid}, log {logdir / (comp + '.log')})")
    return proc.pid


def _log_tail(cluster: str, comp: str, lines: int = 25) -> str:
    try:
        return "\n".join((cdir(cluster) / "logs" / f"{comp}.log").read_text(errors="replace")
                         .splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(what: str, check, timeout: float, cluster: str | None = None, comp: str | tuple | None = None):
    """Poll check() until it returns a truthy value; fail early if a component died."""
    comps = (comp,) if isinstance(comp, str) else tuple(comp or ())
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 (any failure means "not yet")
            last_err = e
        for c in comps:
            if not running_pid(cluster, c):
                raise RuntimeError(f"{cluster}/{c} exited while waiting for {what}:\n{_log_tail(cluster, c)}")
        time.sleep(0.5)
    tail = "".join(f"\n--- {cluster}/{c}:\n{_log_tail(cluster, c)}" for c in comps)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_err}){tail}")


# Programs this script starts (directly, or containerd's shims). Leftover hunting only
# ever considers these, so a developer's `tail -f` of one of our logs is left alone.
OUR_PROGRAMS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                "kube-proxy", "kwok", "containerd", "containerd-shim-runc-v2"}


def _pids_matching(needle: str) -> list[int]:
    """Our programs whose command line mentions one of our own state paths.

    containerd's shims are re-parented away from containerd, so they are found by the
    socket path they were started with, which only this cluster uses.
    """
    pids = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0].decode(errors="replace")) not in OUR_PROGRAMS:
            continue
        if needle in b" ".join(argv).decode(errors="replace"):
            pids.append(int(p.name))
    return pids


def _pod_pids() -> list[int]:
    """Processes inside our pod cgroups: pods of this cluster and nothing else."""
    pids: set[int] = set()
    for hier in _cgroup_controllers():
        top = hier / CGROUP_ROOT
        if top.exists():
            for procs in top.rglob("cgroup.procs"):
                try:
                    pids.update(int(x) for x in procs.read_text().split())
                except OSError:
                    pass
    return sorted(pids)


def _kill(pids: list[int], what: str, grace: float) -> None:
    pids = [p for p in pids if _start_time(p)]
    if not pids:
        return
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if _alive(p):
            log(f"{what}: pid {p} ignored SIGTERM for {grace:.0f}s, sending SIGKILL")
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        try:  # our own child (started by this process): reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def stop(cluster: str, comp: str, grace: float = 15) -> None:
    pid = running_pid(cluster, comp)
    if pid:
        _kill([pid], f"{cluster}/{comp}", grace)
        log(f"{cluster}/{comp} stopped")
    _pidfile(cluster, comp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- HTTP

def _https_get(url: str, cluster: str | None = None, client: str | None = "admin") -> tuple[int, str]:
    ctx = ssl.create_default_context()
    if cluster:
        ctx.load_verify_locations(cdir(cluster) / "pki" / "ca.crt")
        if client:
            pki = cdir(cluster) / "pki"
            ctx.load_cert_chain(pki / f"{client}.crt", pki / f"{client}.key")
    else:  # components' self-signed serving certs: only loopback health checks use this
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode(errors="replace")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


# ------------------------------------------------------------------------------ PKI

def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


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
        _run(["openssl", "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
              "-keyout", str(pki / f"{name}.key"), "-out", str(pki / f"{name}.csr"), "-subj", subject])
        _run(["openssl", "x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / "ca.crt"),
              "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-sha256",
              "-extfile", f.name, "-out", str(pki / f"{name}.crt")])
    finally:
        os.unlink(f.name)
        (pki / f"{name}.csr").unlink(missing_ok=True)


def ensure_pki(cluster: str) -> None:
    """One CA per cluster; EC keys because they are instant to generate."""
    pki = cdir(cluster) / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    os.chmod(pki, 0o700)
    if not (pki / "ca.crt").exists():
        _run(["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
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
        _run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "sa.key")])
        _run(["openssl", "ec", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub")])
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


# ----------------------------------------------------------------- control plane

def start_etcd(cluster: str) -> None:
    c = CLUSTERS[cluster]
    start(cluster, "etcd", [
        str(ETCD_BIN), f"--name=cairn-{cluster}", f"--data-dir={cdir(cluster) / 'etcd'}",
        f"--listen-client-urls=http://127.0.0.1:{c['etcd']}",
        f"--advertise-client-urls=http://127.0.0.1:{c['etcd']}",
        f"--listen-peer-urls=http://127.0.0.1:{c['etcd_peer']}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{c['etcd_peer']}",
        f"--initial-cluster=cairn-{cluster}=http://127.0.0.1:{c['etcd_peer']}",
        # A throwaway test store: durability is not worth the disk I/O shared machines pay.
        "--unsafe-no-fsync", "--log-level=warn", "--quota-backend-bytes=2147483648",
    ])


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
    code, _ = _https_get(f"https://127.0.0.1:{CLUSTERS[cluster]['apiserver']}/readyz", cluster)
    return code == 200


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


def start_kwok(cluster: str) -> None:
    c = CLUSTERS[cluster]
    cfg = cdir(cluster) / "kwok.yaml"
    # An explicit config so a developer's ~/.kwok/kwok.yaml never leaks in, holding the
    # node/pod lifecycle Stages build.sh kept from kwok's own module.
    # kwok applies its option defaults only when no config file sets options, so the
    # ones it needs are spelled out.
    options = {"podPlayStageParallelism": 8, "nodePlayStageParallelism": 4, "nodeLeaseParallelism": 4,
               "nodeLeaseDurationSeconds": 40, "podsOnNodeSyncParallelism": 2,
               "enablePodsOnNodeSyncListPager": True, "enablePodsOnNodeSyncStreamWatch": False,
               "enableDebuggingHandlers": True, "enableContentionProfiling": False,
               "enableProfilingHandler": False}
    docs = [json.dumps({"apiVersion": "config.kwok.x-k8s.io/v1alpha1", "kind": "KwokConfiguration",
                        "options": options}) + "\n"]
    docs += [p.read_text() for p in sorted(KWOK_STAGES.glob("*.yaml"))]
    cfg.write_text("---\n".join(docs))
    start(cluster, "kwok", [
        str(KWOK_BIN), f"--kubeconfig={kubeconfig(cluster)}", f"--config={cfg}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
        f"--cidr={KWOK_POD_CIDR}",
        # Fake nodes advertise kwok's own loopback server, so a stray `kubectl logs` on a
        # kwok pod goes to kwok instead of some address off this machine.
        "--node-ip=127.0.0.1", f"--node-port={c['kwok']}", f"--server-address=127.0.0.1:{c['kwok']}",
    ])


def kubectl(cluster: str, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(KUBECTL), f"--kubeconfig={kubeconfig(cluster)}", *args], input=input,
                          capture_output=True, text=True, check=check, timeout=timeout)


def kwok_node_name(cluster: str, i: int) -> str:
    return f"kwok-{cluster}-{i}"


def reconcile_kwok_nodes(cluster: str, count: int) -> list[str]:
    """Exactly `count` fake nodes: create the missing, delete the surplus."""
    want = [kwok_node_name(cluster, i) for i in range(count)]
    items = []
    for name in want:
        items.append({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                           "kubernetes.io/arch": "amd64", "type": "kwok",
                           "cairn.dev/node-kind": "kwok"},
            },
            # Only workloads that ask for a fake node (by toleration) land on one.
            "spec": {"taints": [{"key": KWOK_ANNOTATION[0], "value": KWOK_ANNOTATION[1],
                                 "effect": "NoSchedule"}]},
        })
    if items:
        kubectl(cluster, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                               "items": items}))
    have = kubectl(cluster, "get", "nodes", "-l", "type=kwok", "-o",
                   "jsonpath={.items[*].metadata.name}").stdout.split()
    extra = [n for n in have if n not in want]
    if extra:
        kubectl(cluster, "delete", "node", *extra, "--wait=false")
    return want


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


# ------------------------------------------------------------------- real node

def _cgroup_controllers(with_unified: bool = False) -> list[pathlib.Path]:
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
    for hier in _cgroup_controllers():
        d = hier / CGROUP_ROOT
        if not d.exists():
            d.mkdir()
        # cpuset children start empty in v1 and would refuse tasks: inherit the parent's.
        for f in ("cpuset.cpus", "cpuset.mems"):
            if (hier / f).exists() and not (d / f).read_text().strip():
                (d / f).write_text((hier / f).read_text())


def remove_cgroups() -> None:
    for hier in _cgroup_controllers(with_unified=True):
        top = hier / CGROUP_ROOT
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -t[0].count("/")):
            try:
                os.rmdir(dirpath)
            except OSError as e:
                log(f"cannot remove cgroup {dirpath}: {e}")


def ensure_bridge() -> None:
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    addrs = _run(["ip", "-o", "addr", "show", "dev", BRIDGE]).stdout
    if f"{NODE_IP}/" not in addrs:
        _run(["ip", "addr", "add", f"{NODE_IP}/24", "dev", BRIDGE])
    _run(["ip", "link", "set", BRIDGE, "up"])
    _proxy().apply_sysctls(_proxy().bridge_sysctls(BRIDGE))


def write_containerd_config() -> pathlib.Path:
    d = cdir("a") / "containerd"
    (d / "net.d").mkdir(parents=True, exist_ok=True)
    # isGateway/ipMasq off: the bridge already carries NODE_IP (set by ensure_bridge), so
    # the host reaches pods (probes, tests) but pods get no route off the bridge and the
    # plugin never turns on the machine's IP forwarding.
    conflist = {
        "cniVersion": "1.0.0", "name": "cairn-a",
        "plugins": [
            {"type": "bridge", "bridge": BRIDGE, "isGateway": False, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "dataDir": str(RUN / "cni-ipam"),
                      "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.223.0.10",
                                   "gateway": NODE_IP}]],
                      # Service ClusterIPs (kube-proxy) through the host; nothing else off the bridge.
                      "routes": _proxy().cni_routes(SERVICE_CIDR, NODE_IP)}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (d / "net.d" / "10-cairn.conflist").write_text(json.dumps(conflist, indent=2) + "\n")
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    cfg = f"""# Generated by tests/cluster/cluster.py; containerd 1.6 (Debian) config format v2.
version = 2
root = "{d / 'root'}"
state = "{RUN / 'containerd' / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{containerd_sock()}"

[ttrpc]
  address = "{containerd_sock()}.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d / 'opt'}"

[{cri}]
  # Built locally by image.py and imported: the sandbox never needs a registry.
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  # Pod network namespaces under our own /run dir, so down can find and remove them.
  netns_mounts_under_state_dir = true
  max_container_log_line_size = 16384
  # This machine withholds CAP_SYS_RESOURCE, so nothing may lower an oom_score_adj
  # below its parent's: clamp the kubelet's negative scores (sandbox -998, Guaranteed
  # pods -997) to containerd's own instead of failing every sandbox.
  restrict_oom_score_adj = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  BinaryName = "{shutil.which('runc') or '/usr/sbin/runc'}"
  SystemdCgroup = false

[{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{d / 'net.d'}"
  max_conf_num = 1
"""
    path = d / "config.toml"
    path.write_text(cfg)
    return path


def ctr(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ctr", "--address", str(containerd_sock()), "-n", "k8s.io", *args],
                          capture_output=True, text=True, check=check, timeout=300)


def _proxy():
    sys.path.insert(0, str(HERE))
    import proxy  # noqa: PLC0415 (same directory, stdlib only)

    return proxy


def start_kube_proxy() -> None:
    cfg = cdir("a") / "kube-proxy.yaml"
    if _proxy().write_config(cfg, kubeconfig("a", "kube-proxy"), REAL_NODE, POD_SUBNET, NODE_IP):
        stop("a", "kube-proxy")  # it leaves by itself on a changed file: make that a clean restart
    start("a", "kube-proxy", _proxy().argv(KUBE_PROXY, cfg))


def kube_proxy_ready() -> bool:
    return _http_get(f"http://127.0.0.1:{_proxy().HEALTHZ_PORT}/healthz")[0] == 200


def import_images() -> None:
    sys.path.insert(0, str(HERE))
    import image  # noqa: PLC0415 (same directory, stdlib only)

    archives = image.build(CACHE / "images", PAUSE_BIN)
    stamp = cdir("a") / "containerd" / "imported"
    key = archives[DEMO_IMAGE].parent.name
    have = ctr("images", "ls", "-q").stdout.split()
    wanted = {f"docker.io/{DEMO_IMAGE}", f"docker.io/{PYTHON_IMAGE}", PAUSE_IMAGE}
    if stamp.exists() and stamp.read_text().strip() == key and wanted <= set(have):
        return
    for name, path in archives.items():
        ctr("images", "import", str(path))
        log(f"imported {name} into containerd")
    stamp.write_text(key + "\n")


def start_runtime() -> None:
    ensure_bridge()
    ensure_cgroup_root()
    cfg = write_containerd_config()
    containerd_sock().parent.mkdir(parents=True, exist_ok=True)
    start("a", "containerd", ["containerd", f"--config={cfg}", "--log-level=warn"])
    wait_for("containerd socket", lambda: ctr("version", check=False).returncode == 0, 60, "a", "containerd")
    import_images()


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
        # Images here cannot be pulled again: never garbage-collect them.
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


# ------------------------------------------------------------------------ up/down

def preflight() -> None:
    if os.geteuid() != 0:
        raise Unsupported("must run as root (kubelet, containerd, mounts, cgroups)")
    missing = [t for t in ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "openssl", "ip", "ldd", "iptables")
               if not shutil.which(t)]
    missing += [p for p in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback",
                            "/usr/lib/cni/portmap", "/bin/busybox", "/usr/bin/python3.11")
                if not os.path.exists(p)]
    if missing:
        raise Unsupported("missing " + ", ".join(missing) + ": apt-get install containerd runc "
                          "containernetworking-plugins busybox-static iproute2 iptables openssl python3.11")
    if not any(h.name == "memory" or "memory" in h.name.split(",") for h in _cgroup_controllers()):
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
        "images": {"demo_app": DEMO_IMAGE, "python": PYTHON_IMAGE, "pause": PAUSE_IMAGE},
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
            if not running_pid(name, comp) and not _port_free(c[key]):
                raise RuntimeError(f"port {c[key]} (cluster {name} {key}) is in use by another process")

    for name in CLUSTERS:
        ensure_pki(name)
        start_etcd(name)
    for name in CLUSTERS:
        wait_for(f"{name}/etcd health",
                 lambda n=name: _http_get(f"http://127.0.0.1:{CLUSTERS[n]['etcd']}/health")[0] == 200,
                 60, name, "etcd")
        start_apiserver(name)
    # The runtime and the image import need nothing from the apiservers: overlap them.
    start_runtime()
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
            wait_for(f"{name}/{comp} /healthz", lambda p=CLUSTERS[name][port]: _https_get(
                f"https://127.0.0.1:{p}/healthz")[0] == 200, 60, name, comp)
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
    said = _proxy().cleanup(KUBE_PROXY)
    if said:
        log(f"kube-proxy --cleanup: {said}")
    sock = containerd_sock()
    if running_pid("a", "containerd") and CRICTL_BIN.exists():
        # Let the runtime tear pods down properly: that releases CNI IPs and netns.
        subprocess.run([str(CRICTL_BIN), f"--runtime-endpoint=unix://{sock}", "--timeout=30s",
                        "rmp", "--all", "--force"], capture_output=True, text=True, timeout=120)
    stop("a", "containerd")
    # Shims (and containers under them) outlive containerd by design: find them by our socket.
    _kill(_pids_matching(str(sock)), "containerd-shim", 10)
    for name in CLUSTERS:
        for comp in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            stop(name, comp)
    # Anything still holding one of our paths (a stray process from a crashed run).
    _kill(_pids_matching(str(STATE) + "/") + _pids_matching(str(RUN) + "/"), "leftover", 10)
    # Containers whose shim was gone (a crash): they would pin their cgroups.
    _kill(_pod_pids(), "orphaned container process", 5)
    for m in _mounts_under(STATE, RUN):
        r = subprocess.run(["umount", m], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True, text=True)
    remove_cgroups()
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
    shutil.rmtree(RUN, ignore_errors=True)
    if not keep_state:
        shutil.rmtree(STATE, ignore_errors=True)
    leftovers = leftover_report()
    if leftovers:
        raise RuntimeError("down left things behind:\n  " + "\n  ".join(leftovers))
    log("down: no process, mount, cgroup or bridge left")


def leftover_report() -> list[str]:
    out = []
    pids = _pids_matching(str(STATE) + "/") + _pids_matching(str(RUN) + "/")
    out += [f"process {p}" for p in pids]
    out += [f"mount {m}" for m in _mounts_under(STATE, RUN)]
    out += [f"cgroup {h / CGROUP_ROOT}" for h in _cgroup_controllers(with_unified=True)
            if (h / CGROUP_ROOT).exists()]
    if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode == 0:
        out.append(f"link {BRIDGE}")
    if shutil.which("iptables"):
        out += _proxy().leftover_chains()
    return out


# --------------------------------------------------------------------------- status

COMPONENTS = {
    "a": ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "containerd", "kubelet",
          "kube-proxy"],
    "b": ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"],
}


def _rss_kib(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def status() -> dict:
    comps, healthy = {}, True
    for name, names in COMPONENTS.items():
        for comp in names:
            pid = running_pid(name, comp)
            comps[f"{name}/{comp}"] = {"pid": pid, "rss_mib": round(_rss_kib(pid) / 1024, 1) if pid else 0}
            healthy &= bool(pid)
    shim_pids = _pids_matching(str(containerd_sock()))
    shims_rss = sum(_rss_kib(p) for p in shim_pids) / 1024
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


# ----------------------------------------------------------------------------- main

def main() -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `status | head` ends quietly
    ap = argparse.ArgumentParser(prog="tests/cluster/<cmd>", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="build if needed, start everything, wait until ready")
    p_up.add_argument("--kwok-nodes", type=int, default=None,
                      help=f"fake nodes in cluster a (default {CLUSTERS['a']['kwok_nodes']})")
    p_up.add_argument("--kwok-nodes-b", type=int, default=None,
                      help=f"fake nodes in cluster b (default {CLUSTERS['b']['kwok_nodes']})")
    p_down = sub.add_parser("down", help="stop everything and remove its state")
    p_down.add_argument("--keep-state", action="store_true", help="keep etcd data, certificates and logs")
    p_st = sub.add_parser("status", help="what runs, its memory, whether it is healthy (exit 1 if not)")
    p_st.add_argument("--json", action="store_true")
    sub.add_parser("build", help="only build (or find cached) binaries")
    args = ap.parse_args()
    try:
        if args.cmd == "up":
            info = up(args.kwok_nodes, args.kwok_nodes_b)
            print(json.dumps(info["clusters"], indent=2))
        elif args.cmd == "down":
            if os.geteuid() != 0:
                raise Unsupported("must run as root")
            down(args.keep_state)
        elif args.cmd == "status":
            st = status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                print_status(st)
            return 0 if st["healthy"] else 1
        elif args.cmd == "build":
            preflight()
            ensure_binaries()
    except Unsupported as e:
        log(f"cannot run the test cluster on this machine: {e}")
        return EXIT_UNSUPPORTED
    except (RuntimeError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", None)
        log(f"{args.cmd} failed: {e}" + (f"\n{detail}" if detail else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
