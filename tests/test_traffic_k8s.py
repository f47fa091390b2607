"""Traffic through the environment's Service while a release and a rollback replace every pod.

On cluster a's real node: the demo app (4 instances) behind its Service, and a client pod on the
same node that sends about 200 HTTP requests per second to the Service's ClusterIP (kube-proxy,
iptables mode), a new connection per request, bounded in count and time. The client prints one
line per request; the test reads them back from the pod's log.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cairn.plan import PauseMode
from cairn.runtimes.kubernetes.service import service_name
from cairn.status import Status
from tests.behaviour.conftest import k8s_images  # noqa: F401 - publishes cairn/demo-app:vN and cairn/python:3.11

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.k8s]
NAMESPACE = "cairn-traffic"
RATE = 200  # requests per second, all client threads together
MAX_S = 240  # the client stops by itself after this, whatever happens to the releases
CLIENT = "traffic-client"

# Runs inside the client pod (cairn/python:3.11: the standard library only). One line per
# request: "R <sent> <ms> <body>" or "E <sent> <ms> <what went wrong>"; it stops at MAX_S, at
# RATE * MAX_S requests, or when /tmp/stop appears.
CLIENT_SCRIPT = r'''
import os, socket, sys, threading, time
host, port, rate, max_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
threads = 8
lock = threading.Lock()
def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
def request():
    with socket.create_connection((host, port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(b"GET /version HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("bad answer %r" % data[:60])
    return body.decode().strip()
def worker(index):
    interval = threads / rate
    began = time.monotonic() + index * interval / threads
    for k in range(int(rate * max_s) // threads):
        if os.path.exists("/tmp/stop") or time.monotonic() - began > max_s:
            return
        delay = began + k * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent, t0 = time.time(), time.monotonic()
        try:
            body = request()
            say("R %.3f %.1f %s" % (sent, (time.monotonic() - t0) * 1000, body))
        except Exception as exc:
            say("E %.3f %.1f %s: %s" % (sent, (time.monotonic() - t0) * 1000, type(exc).__name__, exc))
say("START")
workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
say("DONE")
'''


def register(k8s: Any) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    store.set_secret("k8s-traffic-kubeconfig", Path(k8s.kubeconfig_a).read_text())
    app = f"tr-{uuid.uuid4().hex[:6]}"
    env: dict[str, Any] = {
        "cluster": "k8s-traffic", "image": "cairn/demo-app:v1", "instances": 4, "cpu": 0.2, "memory_mb": 64,
        "ports": [{"container_port": 8080, "host_port": 80, "name": "http"}],
        "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 12},
        "lifecycle": {"termination_grace_period_s": 5},
    }
    cluster = {"name": "k8s-traffic", "runtime": "kubernetes", "kubeconfig_secret": "k8s-traffic-kubeconfig",
               "context": k8s.context_a, "namespace": NAMESPACE}
    store.apply(load_data({"clusters": [cluster], "apps": [{"name": app, "deploy_type": "image",
                                                            "environments": {"production": env}}]}))
    return app


def ship(app: str, version: str) -> str:
    from cairn.orders import actions

    order = actions.create_order(app, "production", version, 2, PauseMode.NONE)["id"]
    done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s=240)
    assert done["status"] == "completed", done["message"]
    return order


def start_client(k8s: Any, registry: str, address: str, port: int) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": CLIENT, "namespace": NAMESPACE},
           "spec": {"restartPolicy": "Never", "nodeSelector": {"cairn.dev/node-kind": "real"},
                    "terminationGracePeriodSeconds": 1, "automountServiceAccountToken": False,
                    "containers": [{"name": "client", "image": f"{registry}/cairn/python:3.11", "imagePullPolicy": "IfNotPresent",
                                    "command": ["python3", "-u", "-c", CLIENT_SCRIPT, address, str(port), str(RATE), str(MAX_S)]}]}}
    k8s.kubectl("a", "-n", NAMESPACE, "delete", "pod", CLIENT, "--ignore-not-found", "--grace-period=0", "--force")
    k8s.kubectl("a", "apply", "-f", "-", input=json.dumps(pod))
    k8s.kubectl("a", "-n", NAMESPACE, "wait", "--for=condition=Ready", f"pod/{CLIENT}", "--timeout=60s", timeout=90)


def client_lines(k8s: Any) -> list[str]:
    return k8s.kubectl("a", "-n", NAMESPACE, "logs", CLIENT, timeout=60).stdout.splitlines()


def stop_client(k8s: Any) -> list[tuple[float, str, str]]:
    """(sent, "R" or "E", body or error) per request, once the client has finished."""
    k8s.kubectl("a", "-n", NAMESPACE, "exec", CLIENT, "--", "touch", "/tmp/stop")
    deadline = time.monotonic() + 30
    while (not (lines := client_lines(k8s)) or lines[-1] != "DONE") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lines and lines[-1] == "DONE", f"the client did not finish: {lines[-5:]}"
    out = []
    for line in lines:
        kind, _, rest = line.partition(" ")
        if kind in ("R", "E"):
            sent, _ms, what = rest.split(" ", 2)
            out.append((float(sent), kind, what))
    return out


def summary(rows: list[tuple[float, str, str]]) -> str:
    if not rows:
        return "no requests"
    span = (max(r[0] for r in rows) - min(r[0] for r in rows)) or 1.0
    versions: dict[str, int] = {}
    for r in rows:
        key = r[2] if r[1] == "R" else "error"
        versions[key] = versions.get(key, 0) + 1
    return f"{len(rows)} requests at {len(rows) / span:.0f}/s, by version {versions}"


def release_then_rollback(app: str) -> dict[str, float]:
    """Ship v2, then roll back to v1, with a few seconds of steady traffic around each: when
    each began and ended (wall clock, as the client pod stamps its requests)."""
    from cairn.orders import actions

    time.sleep(3)
    marks = {"release": time.time()}
    order = ship(app, "v2")
    marks["released"] = time.time()
    time.sleep(3)
    marks["rollback"] = time.time()
    rolled = actions.rollback(order=order)
    marks["rolled"] = time.time()
    assert rolled["state"] == "Completed", rolled
    time.sleep(3)
    return marks


def test_release_and_rollback_through_the_service_lose_no_request(platform: str, k8s_cluster: Any,
                                                                   k8s_images: Any) -> None:  # noqa: F811
    k8s = k8s_cluster
    k8s.kubectl("a", "create", "namespace", NAMESPACE, check=False)
    app = register(k8s)
    try:
        ship(app, "v1")
        svc = k8s.kubectl_json("a", "-n", NAMESPACE, "get", "service", service_name(app, "production"))
        assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["ports"][0]["targetPort"] == 8080
        start_client(k8s, k8s_images.registry, svc["spec"]["clusterIP"], 80)
        marks = release_then_rollback(app)
        rows = stop_client(k8s)
    finally:
        k8s.kubectl("a", "-n", NAMESPACE, "delete", "pod", CLIENT, "--ignore-not-found", "--grace-period=0", "--force",
                    "--wait=false", check=False)
        k8s.kubectl("a", "-n", NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={app}", "--grace-period=0", "--force",
                    "--wait=false", check=False)
        k8s.kubectl("a", "-n", NAMESPACE, "delete", "service", "-l", f"cairn.dev/app={app}", "--wait=false", check=False)

    def between(start: float, end: float) -> list[tuple[float, str, str]]:
        return [r for r in rows if start <= r[0] < end]

    t_release, t_released, t_rollback, t_rolled = (marks[k] for k in ("release", "released", "rollback", "rolled"))

    during = f"release: {summary(between(t_release, t_released))} | rollback: {summary(between(t_rollback, t_rolled))}"
    failed = [r for r in rows if r[1] == "E"]
    assert not failed, f"{len(failed)} of {len(rows)} requests failed ({during}); first: {[r[2] for r in failed[:5]]}"
    released = between(t_release, t_released)
    assert len(released) >= 0.5 * RATE * (t_released - t_release), f"the client did not keep the load up: {during}"
    assert {r[2] for r in released} == {"v1", "v2"}, f"the release window saw both versions: {during}"
    stale = [r for r in between(t_released, t_rollback) if r[2] != "v2"]
    assert not stale, f"{len(stale)} requests after the release completed were not served by v2: {summary(stale)}"
    back = [r for r in rows if r[0] >= t_rolled and r[2] != "v1"]
    assert not back, f"{len(back)} requests after the rollback completed were not served by v1: {summary(back)}"
    print(f"\n{during}; total {summary(rows)}")
