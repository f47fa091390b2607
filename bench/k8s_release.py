"""Issue 7's number: a cairn release of 300 instances in 10 batches on kwok nodes, against a native
Deployment rolling update of the same size and batch size on the same cluster.

    .venv/bin/python bench/k8s_release.py [--instances 300] [--batches 10] [--drain-s 0]

(``--replicas`` is another name for ``--instances``: issue 11 asks for 1000 against a Deployment of 1000.)

Both start from 300 ready pods of v1 and move them to v2, 30 at a time:
- cairn: a release order (a real Prefect flow run through a private platform), pause mode none;
  time = the flow run's start -> end, and the wall time create -> completed.
- Deployment: maxSurge 0, maxUnavailable 30 (cairn replaces in place, so 30 are down at a time);
  time = image patch -> rollout complete (updated = available = 300, observed generation).
Goal: cairn / Deployment <= 1.2. Needs tests/cluster/up (cluster a with kwok nodes).

cairn puts a Service in front of the environment (the port mapping) and takes each pod out of it
before deleting it: it waits until the EndpointSlices drop the pod, then ``drain_s`` more for the
data plane. kwok nodes run no kube-proxy and the Deployment has no Service, so the bench's cluster
sets ``drain_s: 0`` (draining off, as a Deployment does) unless ``--drain-s`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.release import setup, teardown  # noqa: E402 - the private platform of issue 5's bench

INFO = Path("/var/lib/cairn-k8s/cluster.json")
NAMESPACE = "cairn-bench"


def kubectl(info: dict, *args: str, input: str | None = None) -> str:
    proc = subprocess.run([info["kubectl"], f"--kubeconfig={info['clusters']['a']['kubeconfig']}", *args],
                          input=input, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def prepare(info: dict) -> None:
    kubectl(info, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl(info, "create", "namespace", NAMESPACE)
    defaults = {"nodeSelector": json.dumps(info["kwok"]["node_selector"]), "tolerations": json.dumps([info["kwok"]["toleration"]])}
    kubectl(info, "-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cairn-pod-defaults"}, "data": defaults}))


def cairn_release(info: dict, instances: int, batches: int, drain_s: float) -> tuple[float, float]:
    from prefect.client.orchestration import get_client

    from cairn.blocks import store
    from cairn.configfile import load_data
    from cairn.deployments import actions
    from cairn.plan import PauseMode
    from cairn.status import Status

    store.set_secret("bench-k8s-kubeconfig", Path(info["clusters"]["a"]["kubeconfig"]).read_text())
    app = f"bench-{uuid.uuid4().hex[:6]}"
    env = {"cluster": "bench-k8s", "image": "cairn/demo-app:v1", "instances": instances, "cpu": 0.01, "memory_mb": 32,
           "ports": [{"container_port": 8080}], "lifecycle": {"termination_grace_period_s": 1}}
    store.apply(load_data({
        "clusters": [{"name": "bench-k8s", "runtime": "kubernetes", "kubeconfig_secret": "bench-k8s-kubeconfig",
                      "context": info["clusters"]["a"]["context"], "namespace": NAMESPACE, "drain_s": drain_s}],
        "apps": [{"name": app, "environments": {"production": env}}]}))
    first = actions.wait_for(actions.create_order(app, "production", "v1", batches, PauseMode.NONE)["id"],
                             {Status.COMPLETED, Status.FAILED}, 900)
    assert first["status"] == "completed", first["message"]
    began = time.monotonic()
    order = actions.create_order(app, "production", "v2", batches, PauseMode.NONE)["id"]
    done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, 900)
    wall = time.monotonic() - began
    assert done["status"] == "completed", done["message"]
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(order)
    pods = json.loads(kubectl(info, "-n", NAMESPACE, "get", "pods", "-l", f"cairn.dev/app={app}", "-o", "json"))["items"]
    # Replaced pods may still be terminating (their grace period): like a Deployment's rollout,
    # the order is done once every slot's pod runs v2.
    serving = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    versions = {p["metadata"]["labels"]["cairn.dev/version"] for p in serving}
    assert len(serving) == instances and versions == {"v2"}, (len(serving), versions)
    kubectl(info, "-n", NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={app}", "--wait=false")
    return (run.end_time - run.start_time).total_seconds(), wall


def deployment_rollout(info: dict, instances: int, batches: int) -> float:
    name = "bench-native"
    step = instances // batches
    pod = {"metadata": {"labels": {"app": name}},
           "spec": {"nodeSelector": info["kwok"]["node_selector"], "tolerations": [info["kwok"]["toleration"]],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": "cairn/demo-app:v1", "imagePullPolicy": "IfNotPresent",
                                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "10m", "memory": "32Mi"}},
                                    "ports": [{"containerPort": 8080}]}]}}
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"replicas": instances, "selector": {"matchLabels": {"app": name}}, "template": pod,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": step}}}}
    kubectl(info, "apply", "-f", "-", input=json.dumps(body))
    kubectl(info, "-n", NAMESPACE, "rollout", "status", f"deployment/{name}", "--timeout=900s")
    began = time.monotonic()
    kubectl(info, "-n", NAMESPACE, "set", "image", f"deployment/{name}", "app=cairn/demo-app:v2")
    while True:
        dep = json.loads(kubectl(info, "-n", NAMESPACE, "get", "deployment", name, "-o", "json"))
        s = dep["status"]
        if (s.get("observedGeneration", 0) >= dep["metadata"]["generation"] and s.get("updatedReplicas") == instances
                and s.get("availableReplicas") == instances and s.get("replicas") == instances):
            took = time.monotonic() - began
            break
        time.sleep(0.1)
    kubectl(info, "-n", NAMESPACE, "delete", "deployment", name, "--wait=false")
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", "--replicas", type=int, default=300)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--drain-s", type=float, default=0.0, help="the cluster's drain_s (kwok has no data plane to wait for)")
    args = ap.parse_args()
    if not INFO.exists():
        print("no test cluster: run tests/cluster/up", file=sys.stderr)
        return 3
    info = json.loads(INFO.read_text())
    prepare(info)
    native = deployment_rollout(info, args.instances, args.batches)
    print(f"Deployment rolling update: {args.instances} pods, maxUnavailable {args.instances // args.batches}: {native:.1f}s", flush=True)
    home = setup()
    try:
        flow_s, wall_s = cairn_release(info, args.instances, args.batches, args.drain_s)
    finally:
        teardown()
        os.environ.pop("CAIRN_HOME", None)
        del home
    print(f"cairn release: {args.instances} instances in {args.batches} batches (drain_s {args.drain_s:g}): "
          f"flow run {flow_s:.1f}s, create->completed {wall_s:.1f}s")
    print(f"ratio cairn/Deployment: {flow_s / native:.2f} (flow run), {wall_s / native:.2f} (wall); goal <= 1.2")
    kubectl(info, "delete", "namespace", NAMESPACE, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
