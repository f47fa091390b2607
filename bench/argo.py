"""Issue 11, item 3: Argo Rollouts against cairn, the same release on the same kwok cluster (b).

    .venv/bin/python bench/argo.py [--instances 100] [--batches 10]

- Argo Rollouts' controller is fetched from the Go module proxy and built at bench time
  (bench/build_argo.sh; cached under /var/cache/cairn-bench, never in the repo), its CRDs applied
  to cluster b, and it runs out of cluster against b's kubeconfig (cluster-wide, no leader
  election). A Rollout of N replicas on kwok nodes, canary without traffic routing (so setWeight
  sets replica counts), maxSurge 0 and maxUnavailable = one batch (cairn replaces in place), and
  per cairn batch boundary a step setWeight = the share of instances shipped so far, then a
  zero-length pause (cairn's pause mode none). Time = image patch -> the Rollout Healthy with
  every replica updated and available.
- cairn: an order of the same size and batches through the kubernetes runtime (private platform),
  pause mode none; time = its flow run, and create -> completed.
- Both behind a ClusterIP Service on port 8080 (cairn makes its environment's; the bench gives the
  Rollout the same), or neither with ``--no-service``: the EndpointSlice controller's work at every
  pod change is part of either's time (bench/k8s_release.py).
- memory: the controller's RSS (idle, and peak during its rollout) against cairn's platform
  (Prefect server + worker + the flow run process + agent trees; peak during its release).
Both start from N ready pods of v1 and move them to v2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import kwok  # noqa: E402
from bench.measure import PeakRss, alone, flow_runs, machine, tree, tree_rss_mib  # noqa: E402
from bench.release import setup, teardown  # noqa: E402 - the private platform of issue 5's bench

CLUSTER = "b"
ARGO_NS, CAIRN_NS = "argo-bench", "cairn-bench-b"
CRDS = ["rollout-crd.yaml", "analysis-template-crd.yaml", "cluster-analysis-template-crd.yaml", "analysis-run-crd.yaml", "experiment-crd.yaml"]


def build() -> Path:
    proc = subprocess.run([str(ROOT / "bench" / "build_argo.sh")], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"building Argo Rollouts failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def start_controller(binary: Path, log: Path) -> subprocess.Popen[bytes]:
    from cairn.controlplane.processes import free_port

    kubeconfig = kwok.info()["clusters"][CLUSTER]["kubeconfig"]
    crds = binary.parent / "crds"
    kwok.kubectl(CLUSTER, "apply", "--server-side", "--force-conflicts", *[a for c in CRDS for a in ("-f", str(crds / c))])
    return subprocess.Popen([str(binary), f"--kubeconfig={kubeconfig}", "--leader-elect=false", "--loglevel=warn",
                             f"--metricsport={free_port(18090)}", f"--healthzPort={free_port(18080)}"],
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


def rollout_body(instances: int, batches: int, image: str) -> dict[str, Any]:
    from cairn.plan import plan_release

    sizes = [b.size for b in plan_release(instances, batches).batches]
    steps: list[dict[str, Any]] = []
    shipped = 0
    for size in sizes[:-1]:
        shipped += size
        steps += [{"setWeight": round(100 * shipped / instances)}, {"pause": {"duration": "0s"}}]
    pod = {"metadata": {"labels": {"app": "bench-argo"}},
           "spec": {**kwok.kwok_pod_spec(), "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent",
                                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "10m", "memory": "32Mi"}},
                                    "ports": [{"containerPort": 8080}]}]}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "bench-argo", "namespace": ARGO_NS},
            "spec": {"replicas": instances, "selector": {"matchLabels": {"app": "bench-argo"}}, "template": pod,
                     "strategy": {"canary": {"maxSurge": 0, "maxUnavailable": max(sizes), "steps": steps}}}}


def rollout_done(instances: int) -> bool:
    ro = json.loads(kwok.kubectl(CLUSTER, "-n", ARGO_NS, "get", "rollout", "bench-argo", "-o", "json"))
    s = ro.get("status", {})
    return (s.get("observedGeneration") == str(ro["metadata"]["generation"]) and s.get("phase") == "Healthy"
            and s.get("updatedReplicas") == instances and s.get("availableReplicas") == instances
            and s.get("stableRS") == s.get("currentPodHash"))


def wait_rollout(instances: int, timeout_s: float = 1800) -> None:
    deadline = time.monotonic() + timeout_s
    while not rollout_done(instances):
        if time.monotonic() > deadline:
            raise SystemExit(f"the Rollout did not finish within {timeout_s:.0f}s")
        time.sleep(0.1)


def quiet() -> None:
    """Both sides' namespaces gone (their pods deleted), so one side's clean-up never runs during the other's timing."""
    for namespace in (ARGO_NS, CAIRN_NS):
        kwok.kubectl(CLUSTER, "delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=600)


def argo(instances: int, batches: int, binary: Path, log: Path, service: bool = True) -> dict[str, float]:
    quiet()
    kwok.fresh_namespace(CLUSTER, ARGO_NS)
    controller = start_controller(binary, log)
    try:
        if service:
            kwok.kubectl(CLUSTER, "apply", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench-argo", "namespace": ARGO_NS},
                "spec": {"type": "ClusterIP", "selector": {"app": "bench-argo"},
                         "ports": [{"name": "port-8080", "protocol": "TCP", "port": 8080, "targetPort": 8080}]}}))
        kwok.kubectl(CLUSTER, "apply", "-f", "-", input=json.dumps(rollout_body(instances, batches, "cairn/demo-app:v1")))
        wait_rollout(instances)
        time.sleep(2)
        idle = tree_rss_mib(controller.pid)
        with PeakRss({"controller": tree(controller.pid)}, period_s=0.5) as peak:
            began = time.monotonic()
            kwok.kubectl(CLUSTER, "-n", ARGO_NS, "patch", "rollout", "bench-argo", "--type=json",
                         "-p", json.dumps([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "cairn/demo-app:v2"}]))
            time.sleep(0.5)  # the patch bumps the generation; `done` then waits for the controller to observe it
            wait_rollout(instances)
            took = time.monotonic() - began
        return {"wall_s": took, "rss_idle_mib": idle, "rss_peak_mib": peak.peak["controller"]}
    finally:
        from cairn.controlplane.processes import stop_process_group

        stop_process_group(controller.pid)
        kwok.kubectl(CLUSTER, "delete", "namespace", ARGO_NS, "--wait=false")


def cairn(instances: int, batches: int, service: bool = True) -> dict[str, float]:
    from cairn.runtimes.local import agent_status

    quiet()
    kwok.fresh_namespace(CLUSTER, CAIRN_NS)
    home = setup()
    try:
        state = json.loads((Path(home) / "platform.json").read_text())
        app = kwok.register(CLUSTER, CAIRN_NS, instances, service=service)
        kwok.release(app, "v1", batches)
        worker = state["worker"]["pid"]
        groups = {"server": tree(state["server"]["pid"]), "worker": alone(worker), "flow": flow_runs(worker, home),
                  "agent": tree(agent_status()["pid"])}
        with PeakRss(groups, period_s=0.5) as peak:
            done = kwok.release(app, "v2", batches)
        return {"flow_s": done.flow_s, "wall_s": done.wall_s, "rss_peak_mib": sum(peak.peak.values()),
                **{f"rss_{k}_mib": v for k, v in peak.peak.items()}}
    finally:
        teardown()
        shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("CAIRN_HOME", None)
        kwok.kubectl(CLUSTER, "delete", "namespace", CAIRN_NS, "--wait=false")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=100)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--no-service", dest="service", action="store_false", help="no Service in front of either")
    args = ap.parse_args()
    binary = build()
    version = binary.parent.name.removeprefix("argo-rollouts-")
    print(f"before: {machine()}", flush=True)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "argo-rollouts-controller.log"
    a = argo(args.instances, args.batches, binary, log, args.service)
    print(f"Argo Rollouts {version}: {args.instances} replicas, {args.batches} steps: {a['wall_s']:.1f}s; controller RSS idle "
          f"{a['rss_idle_mib']:.0f} MiB, peak {a['rss_peak_mib']:.0f} MiB (log {log})", flush=True)
    c = cairn(args.instances, args.batches, args.service)
    print(f"cairn: {args.instances} instances, {args.batches} batches: flow run {c['flow_s']:.1f}s, create->completed {c['wall_s']:.1f}s; "
          f"platform RSS peak {c['rss_peak_mib']:.0f} MiB (server {c['rss_server_mib']:.0f}, worker {c['rss_worker_mib']:.0f}, "
          f"flow run {c['rss_flow_mib']:.0f}, agent {c['rss_agent_mib']:.0f})", flush=True)
    print(f"cairn / Argo Rollouts: time {c['flow_s'] / a['wall_s']:.2f} (flow run), {c['wall_s'] / a['wall_s']:.2f} (end to end); "
          f"memory {c['rss_peak_mib'] / a['rss_peak_mib']:.1f}x")
    print(json.dumps({"argo": a, "cairn": c, "version": version}))
    print(f"after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
