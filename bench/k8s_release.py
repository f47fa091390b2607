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

Both serve port 8080 behind a ClusterIP Service, as an app with a port mapping does: cairn makes
its environment's, the bench gives the Deployment the same one. The Service is not free: the
EndpointSlice controller rewrites the slices at every pod change and the real node's kube-proxy
re-programs iptables for every fake pod's address (on 2 cores, ~20% of a 300-pod release).
``--no-service`` compares the two without one (no port mapping for cairn).

cairn takes each pod out of the Service before deleting it: it waits until the EndpointSlices drop
the pod, then ``drain_s`` more for the data plane. kwok nodes run no data plane and a Deployment
does not drain, so the bench's cluster sets ``drain_s: 0`` (draining off, as Kubernetes does)
unless ``--drain-s`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.release import setup, teardown

INFO = Path("/var/lib/cairn-k8s/cluster.json")
NAMESPACE = "cairn-bench"


def kubectl(info: dict, *args: str, input: str | None = None) -> str:
    proc = subprocess.run([info["kubectl"], f"--kubeconfig={info['clusters']['a']['kubeconfig']}", *args],
                          input=input, capture_output=True, text=True, timeout=120)
    if proc.returncode:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def prepared_cluster() -> dict:
    """The test cluster's facts, with the bench's namespace made afresh; exits if no cluster runs."""
    if not INFO.exists():
        raise SystemExit("no test cluster: run tests/cluster/up")
    info = json.loads(INFO.read_text())
    prepare(info)
    return info


def prepare(info: dict) -> None:
    kubectl(info, "delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl(info, "create", "namespace", NAMESPACE)
    defaults = {"nodeSelector": json.dumps(info["kwok"]["node_selector"]), "tolerations": json.dumps([info["kwok"]["toleration"]])}
    kubectl(info, "-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cairn-pod-defaults"}, "data": defaults}))


def print_timeline(client: Any, run: Any) -> None:
    """Each task run of the order, as seconds from the flow run's start: where a batch's time goes."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    for state in client.read_flow_run_states(run.id):
        print(f"  {state.name:<22} {(state.timestamp - run.start_time).total_seconds():+6.2f}")
    tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    previous_end = 0.0
    for t in sorted(tasks, key=lambda t: t.start_time or run.start_time):
        if t.start_time is None or t.end_time is None:
            continue
        start = (t.start_time - run.start_time).total_seconds()
        end = (t.end_time - run.start_time).total_seconds()
        print(f"  {t.name.split(' (')[0]:<22} {start:6.2f} -> {end:6.2f}  ({end - start:5.2f} s, {start - previous_end:+5.2f} s after the previous)")
        previous_end = end
    print(f"  flow run ends {(run.end_time - run.start_time).total_seconds():6.2f}")


def cairn_release(info: dict, instances: int, batches: int, drain_s: float, *, service: bool = True,
                  timeline: bool = False) -> tuple[float, float]:
    from prefect.client.orchestration import get_client

    from cairn.blocks import store
    from cairn.configfile import load_data
    from cairn.orders import actions
    from cairn.plan import PauseMode
    from cairn.status import Status

    store.set_secret("bench-k8s-kubeconfig", Path(info["clusters"]["a"]["kubeconfig"]).read_text())
    app = f"bench-{uuid.uuid4().hex[:6]}"
    env = {"cluster": "bench-k8s", "image": "cairn/demo-app:v1", "instances": instances, "cpu": 0.01, "memory_mb": 32,
           "ports": [{"container_port": 8080}] if service else [], "lifecycle": {"termination_grace_period_s": 1}}
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
        if timeline:
            print_timeline(client, run)
    pods = json.loads(kubectl(info, "-n", NAMESPACE, "get", "pods", "-l", f"cairn.dev/app={app}", "-o", "json"))["items"]
    # Replaced pods may still be terminating (their grace period): like a Deployment's rollout,
    # the order is done once every slot's pod runs v2.
    serving = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    versions = {p["metadata"]["labels"]["cairn.dev/version"] for p in serving}
    assert len(serving) == instances and versions == {"v2"}, (len(serving), versions)
    kubectl(info, "-n", NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={app}", "--wait=false")
    quiet(info)
    return (run.end_time - run.start_time).total_seconds(), wall


def quiet(info: dict, timeout_s: float = 300) -> None:
    """Wait until the namespace has no pod left, so one side's clean-up never runs during the other's timing."""
    deadline = time.monotonic() + timeout_s
    while kubectl(info, "-n", NAMESPACE, "get", "pods", "-o", "name").strip():
        if time.monotonic() > deadline:
            raise SystemExit(f"pods of {NAMESPACE} still there after {timeout_s:.0f} s")
        time.sleep(0.5)


def deployment_rollout(info: dict, instances: int, batches: int, *, service: bool = True) -> float:
    name = f"bench-native-{uuid.uuid4().hex[:6]}"
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
    if service:
        kubectl(info, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"type": "ClusterIP", "selector": {"app": name},
                     "ports": [{"name": "port-8080", "protocol": "TCP", "port": 8080, "targetPort": 8080}]}}))
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
    kubectl(info, "-n", NAMESPACE, "delete", "service", name, "--ignore-not-found", "--wait=false")
    quiet(info)
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", "--replicas", type=int, default=300)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--no-service", dest="service", action="store_false",
                    help="no Service in front of either (cairn's environment has no port mapping)")
    ap.add_argument("--rounds", type=int, default=1, help="Deployment, then cairn, this many times; medians reported")
    ap.add_argument("--timeline", action="store_true", help="print each task run's start and end within the order")
    ap.add_argument("--drain-s", type=float, default=0.0, help="the cluster's drain_s (kwok has no data plane to wait for)")
    args = ap.parse_args()
    info = prepared_cluster()
    home = setup()
    natives, flows, walls = [], [], []
    try:
        for _ in range(args.rounds):
            natives.append(deployment_rollout(info, args.instances, args.batches, service=args.service))
            print(f"Deployment rolling update: {args.instances} pods, maxUnavailable {args.instances // args.batches}, "
                  f"{'with' if args.service else 'no'} Service: {natives[-1]:.1f}s", flush=True)
            flow_s, wall_s = cairn_release(info, args.instances, args.batches, args.drain_s, service=args.service,
                                           timeline=args.timeline)
            flows.append(flow_s)
            walls.append(wall_s)
            print(f"cairn release: {args.instances} instances in {args.batches} batches (drain_s {args.drain_s:g}): "
                  f"flow run {flow_s:.1f}s, create->completed {wall_s:.1f}s", flush=True)
            print(f"ratio cairn/Deployment: {flow_s / natives[-1]:.2f} (flow run), {wall_s / natives[-1]:.2f} (wall); goal <= 1.2",
                  flush=True)
    finally:
        teardown()
        os.environ.pop("CAIRN_HOME", None)
        del home
    if args.rounds > 1:
        native, flow_s, wall_s = statistics.median(natives), statistics.median(flows), statistics.median(walls)
        print(f"medians over {args.rounds} rounds: Deployment {native:.2f}s, cairn flow run {flow_s:.2f}s, "
              f"create->completed {wall_s:.2f}s; ratio {flow_s / native:.2f} (flow run), {wall_s / native:.2f} (wall)")
    kubectl(info, "delete", "namespace", NAMESPACE, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
