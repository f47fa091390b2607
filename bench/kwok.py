"""The kwok test clusters (tests/cluster) as the benches use them: kubectl on cluster a or b, a
fresh namespace whose pods land on kwok nodes, and one cairn release through the kubernetes
runtime (a real order: a Prefect flow run through the private platform of bench/release.py)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INFO = Path("/var/lib/cairn-k8s/cluster.json")


def info() -> dict[str, Any]:
    if not INFO.exists():
        raise SystemExit("no test cluster: run tests/cluster/up")
    return json.loads(INFO.read_text())


def kubectl(cluster: str, *args: str, input: str | None = None, timeout: float = 300) -> str:
    i = info()
    proc = subprocess.run([i["kubectl"], f"--kubeconfig={i['clusters'][cluster]['kubeconfig']}", *args],
                          input=input, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        raise SystemExit(f"kubectl {' '.join(args)}: {proc.stderr}")
    return proc.stdout


def fresh_namespace(cluster: str, namespace: str) -> None:
    """An empty namespace whose pods go to kwok nodes (cairn reads its pod defaults from this ConfigMap)."""
    i = info()
    kubectl(cluster, "delete", "namespace", namespace, "--ignore-not-found", "--wait=true", timeout=600)
    kubectl(cluster, "create", "namespace", namespace)
    defaults = {"nodeSelector": json.dumps(i["kwok"]["node_selector"]), "tolerations": json.dumps([i["kwok"]["toleration"]])}
    kubectl(cluster, "-n", namespace, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cairn-pod-defaults"}, "data": defaults}))


def kwok_pod_spec() -> dict[str, Any]:
    """What a native workload's pods need to land on kwok nodes, as cairn's pods get from the defaults."""
    i = info()
    return {"nodeSelector": i["kwok"]["node_selector"], "tolerations": [i["kwok"]["toleration"]]}


@dataclass(frozen=True)
class CairnRelease:
    app: str
    order: str
    flow_s: float  # the order's flow run: start -> end
    wall_s: float  # create -> completed, as `cairn release create --wait` sees it


def register(cluster: str, namespace: str, instances: int, drain_s: float = 0.0, *, service: bool = True) -> str:
    """An app of ``instances`` demo pods on the cluster's kwok nodes, port 8080 behind the
    environment's Service (none with ``service`` False: no port mapping). ``drain_s`` is 0 unless
    asked: kwok nodes have no data plane to wait for, and neither a Deployment nor an Argo Rollout
    without traffic routing waits before deleting a pod (bench/k8s_release.py says more)."""
    from cairn.blocks import store
    from cairn.configfile import load_data

    i = info()
    secret = f"bench-{cluster}-kubeconfig"
    store.set_secret(secret, Path(i["clusters"][cluster]["kubeconfig"]).read_text())
    app = f"bench-{uuid.uuid4().hex[:6]}"
    env = {"cluster": f"bench-k8s-{cluster}", "image": "cairn/demo-app:v1", "instances": instances, "cpu": 0.01, "memory_mb": 32,
           "ports": [{"container_port": 8080}] if service else [], "lifecycle": {"termination_grace_period_s": 1}}
    store.apply(load_data({
        "clusters": [{"name": f"bench-k8s-{cluster}", "runtime": "kubernetes", "kubeconfig_secret": secret,
                      "context": i["clusters"][cluster]["context"], "namespace": namespace, "drain_s": drain_s}],
        "apps": [{"name": app, "environments": {"production": env}}]}))
    return app


def release(app: str, version: str, batches: int, timeout_s: float = 1800) -> CairnRelease:
    from prefect.client.orchestration import get_client

    from cairn.orders import actions
    from cairn.plan import PauseMode
    from cairn.status import Status

    began = time.monotonic()
    order = actions.create_order(app, "production", version, batches, PauseMode.NONE)["id"]
    done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s)
    wall = time.monotonic() - began
    if done["status"] != "completed":
        raise SystemExit(f"cairn order {order} {done['status']}: {done['message']}")
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(order)
    return CairnRelease(app, order, (run.end_time - run.start_time).total_seconds(), wall)
