"""Release orders on Kubernetes, end to end: a real Prefect server and worker, production on
cluster a's real node, test on cluster b (kwok). Every check reads the pods through the API.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cairn.plan import PauseMode
from cairn.status import Status
from tests.behaviour.conftest import k8s_images  # noqa: F401 - publishes cairn/demo-app:vN to the real node

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.k8s]
NAMESPACE = "cairn-release"


def register(k8s: Any, health: Path) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    store.set_secret("k8s-a-kubeconfig", Path(k8s.kubeconfig_a).read_text())
    store.set_secret("k8s-b-kubeconfig", Path(k8s.kubeconfig_b).read_text())
    # Cluster b has only kwok nodes: its namespace's pod defaults let pods land there.
    defaults = {"nodeSelector": json.dumps(k8s.kwok_node_selector), "tolerations": json.dumps([k8s.kwok_toleration])}
    k8s.kubectl("b", "create", "namespace", NAMESPACE, check=False)
    k8s.kubectl("b", "-n", NAMESPACE, "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cairn-pod-defaults"}, "data": defaults}))
    app = f"k8s-{uuid.uuid4().hex[:6]}"
    env: dict[str, Any] = {
        "image": "cairn/demo-app:v1", "instances": 6, "cpu": 0.1, "memory_mb": 64,
        "ports": [{"container_port": 8080}],
        "env": {"DEMO_HEALTH_FILE": f"/deps/{health.name}"},
        "dirs": [{"path": "/deps", "host_path": str(health.parent)}],
        "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 12},
        "lifecycle": {"termination_grace_period_s": 2},
    }
    clusters = [{"name": f"k8s-{c}", "runtime": "kubernetes", "kubeconfig_secret": f"k8s-{c}-kubeconfig",
                 "context": getattr(k8s, f"context_{c}"), "namespace": NAMESPACE, "allowed_host_paths": [str(health.parent)]}
                for c in ("a", "b")]
    data = {"clusters": clusters, "apps": [{"name": app, "deploy_type": "image", "environments": {
        "production": {**env, "cluster": "k8s-a"}, "test": {**env, "cluster": "k8s-b"}}}]}
    store.apply(load_data(data))
    return app


def pods(k8s: Any, cluster: str, app: str, env: str = "production") -> dict[int, dict[str, Any]]:
    """Each slot's pod. A replaced pod may still be stopping beside its replacement (cairn does
    not wait for it): the slot's pod is the one not being deleted."""
    items = k8s.kubectl_json(cluster, "get", "pods", "-n", NAMESPACE, "-l", f"cairn.dev/app={app},cairn.dev/environment={env}")["items"]
    return {int(p["metadata"]["labels"]["cairn.dev/slot"]): p for p in items if not p["metadata"].get("deletionTimestamp")}


def versions(k8s: Any, app: str, cluster: str = "a", env: str = "production") -> list[str]:
    """Each slot's version as its pod's labels say (what `kubectl get pods -L cairn.dev/version` shows)."""
    found = pods(k8s, cluster, app, env)
    return [found[s]["metadata"]["labels"]["cairn.dev/version"] if s in found else "-" for s in range(max(found, default=-1) + 1)]


def serving(k8s: Any, app: str) -> list[str]:
    import httpx

    return [httpx.get(f"http://{p['status']['podIP']}:8080/version", timeout=5).text.strip() for _, p in sorted(pods(k8s, "a", app).items())]


def create(app: str, version: str, mode: PauseMode, env: str = "production") -> str:
    from cairn.orders import actions

    return actions.create_order(app, env, version, 3, mode)["id"]


def wait(order: str, *statuses: Status) -> dict[str, Any]:
    from cairn.orders import actions

    return actions.wait_for(order, set(statuses), timeout_s=300)


def uids(k8s: Any, app: str) -> dict[int, str]:
    return {s: p["metadata"]["uid"] for s, p in pods(k8s, "a", app).items()}


def test_release_pause_fail_retry_close_rollback_on_two_clusters(platform: str, k8s_cluster: Any, k8s_images: None,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    k8s = k8s_cluster
    health = tmp_path / "deps" / "db-up"
    health.parent.mkdir()
    health.touch()
    app = register(k8s, health)
    try:
        check_release(k8s, app, health)
    finally:  # the real node has 2 cores: leave nothing behind for the next suite
        for cluster in ("a", "b"):
            k8s.kubectl(cluster, "-n", NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={app}", "--grace-period=0",
                        "--force", "--wait=false", check=False)


def check_release(k8s: Any, app: str, health: Path) -> None:
    from cairn.orders import actions

    first = wait(create(app, "v1", PauseMode.NONE), Status.COMPLETED, Status.FAILED)
    assert first["status"] == "completed", first["message"]
    assert versions(k8s, app) == ["v1"] * 6 and serving(k8s, app) == ["v1"] * 6
    assert {p["spec"]["nodeName"] for p in pods(k8s, "a", app).values()} == set(k8s.a.real_nodes)

    order = create(app, "v2", PauseMode.EVERY_BATCH)
    assert wait(order, Status.PAUSED, Status.FAILED)["status"] == "paused"
    assert versions(k8s, app) == ["v2"] * 2 + ["v1"] * 4, "batch 1 is exactly slots 0 and 1"
    held = uids(k8s, app)
    time.sleep(3)  # a pause holds the mix: nothing changes while nobody approves
    assert uids(k8s, app) == held and versions(k8s, app) == ["v2"] * 2 + ["v1"] * 4

    actions.resume(order, comment="batch 1 looks good")
    assert wait(order, Status.PAUSED, Status.FAILED)["status"] == "paused"
    assert versions(k8s, app) == ["v2"] * 4 + ["v1"] * 2

    health.unlink()  # the dependency the health check needs goes away: batch 3 cannot become healthy
    actions.resume(order, comment="go on")
    failed = wait(order, Status.FAILED, Status.COMPLETED)
    assert failed["status"] == "failed" and "batch 3 failed" in failed["message"], failed["message"]
    assert f"{app}-production-4" in failed["message"] and "answered 503" in failed["message"], failed["message"]
    before_retry = uids(k8s, app)
    assert versions(k8s, app) == ["v2"] * 6

    health.touch()
    actions.retry(order)
    done = wait(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    after_retry = uids(k8s, app)
    assert [after_retry[s] == before_retry[s] for s in range(6)] == [True] * 4 + [False] * 2, "retry touched only the failed slots"

    third = create(app, "v3", PauseMode.FIRST_BATCH)
    assert wait(third, Status.PAUSED, Status.FAILED)["status"] == "paused"
    assert actions.close(third)["status"] == "closed"
    assert versions(k8s, app) == ["v3"] * 2 + ["v2"] * 4, "close leaves instances as they are"

    actions.rollback(third)
    deadline = time.monotonic() + 60
    while serving_ready(k8s, app) != ["v2"] * 6 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert versions(k8s, app) == ["v2"] * 6 and serving(k8s, app) == ["v2"] * 6

    # The same app's test environment runs on the other cluster.
    test_order = wait(create(app, "v1", PauseMode.NONE, env="test"), Status.COMPLETED, Status.FAILED)
    assert test_order["status"] == "completed", test_order["message"]
    assert versions(k8s, app, cluster="b", env="test") == ["v1"] * 6
    assert {p["spec"]["nodeName"] for p in pods(k8s, "b", app, "test").values()} <= set(k8s.b.kwok_nodes)
    assert pods(k8s, "a", app, "test") == {} and pods(k8s, "b", app, "production") == {}


def serving_ready(k8s: Any, app: str) -> list[str]:
    found = pods(k8s, "a", app)
    ready = [all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}]) for p in found.values()]
    return serving(k8s, app) if all(ready) and len(found) == 6 else []
