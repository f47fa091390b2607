"""The environment's Service, one pod per slot, and what `cairn traffic` shows: pure, no cluster."""

from __future__ import annotations

from typing import Any

from cairn.config import PortMapping
from cairn.runtime import EnvRef
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes import service as s
from cairn.runtimes.kubernetes.observe import current, instance_of

ENV = EnvRef("k8s", "shop", "production")


def test_the_service_selects_only_the_environments_serving_pods_and_maps_each_port() -> None:
    ports = [PortMapping(container_port=8080, host_port=80, name="http"), PortMapping(container_port=9090)]
    svc = s.service("shop", "production", "ns", ports, "NodePort")
    assert svc["metadata"]["name"] == "shop-production" and svc["metadata"]["namespace"] == "ns"
    assert svc["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "cairn", m.APP: "shop", m.ENV: "production"}
    assert svc["spec"]["type"] == "NodePort"
    assert svc["spec"]["selector"] == {m.APP: "shop", m.ENV: "production", m.SERVING: "true"}
    assert svc["spec"]["ports"] == [
        {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080},
        {"name": "port-9090", "protocol": "TCP", "port": 9090, "targetPort": 9090},
    ]


def _pod(name: str, slot: int, uid: str, *, deleting: bool = False, created: str = "2026-01-01T00:00:00Z",
         serving: str = "true", ip: str = "10.0.0.1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid, "creationTimestamp": created,
                            "labels": {m.SLOT: str(slot), m.SERVING: serving, m.VERSION: "v1"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:09Z"
    return {"metadata": meta, "status": {"podIP": ip}}


def test_one_pod_per_slot_the_live_one_before_the_one_stopping() -> None:
    old = _pod("shop-production-0-aaaaaaaaaaaa", 0, "u-old", deleting=True)
    new = _pod("shop-production-0-bbbbbbbbbbbb", 0, "u-new", created="2026-01-01T00:00:05Z")
    other = _pod("shop-production-1-aaaaaaaaaaaa", 1, "u-1", deleting=True)
    assert [p["metadata"]["uid"] for p in current([old, new, other])] == ["u-new", "u-1"]
    assert instance_of("shop-production-0-bbbbbbbbbbbb") == "shop-production-0"
    assert instance_of("web-2-test-3-012345678901") == "web-2-test-3", "an all-digit revision is still the revision"


def test_traffic_view_reads_backend_states_from_the_endpoint_slices() -> None:
    svc = {"metadata": {"name": "shop-production"},
           "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.7", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    slices = [{"endpoints": [
        {"targetRef": {"uid": "a"}, "conditions": {"ready": True, "serving": True, "terminating": False}},
        {"targetRef": {"uid": "b"}, "conditions": {"ready": False, "serving": True, "terminating": True}},
        {"targetRef": {"uid": "c"}, "conditions": {"ready": False, "serving": False, "terminating": False}},
    ]}]
    pods = [_pod("p-0", 0, "a", ip="10.0.0.1"), _pod("p-1", 1, "b"), _pod("p-2", 2, "c"), _pod("p-3", 3, "d", serving="false")]
    view = s.view(ENV, svc, slices, pods, drain_s=2.0)
    [listener] = view.listeners
    assert listener.address == "10.96.0.7:80" and listener.listening
    assert [(b.instance, b.state) for b in listener.backends] == [
        ("p-0", "ready"), ("p-1", "terminating"), ("p-2", "out"), ("p-3", "draining")]
    assert listener.backends[0].address == "10.0.0.1:8080"
    assert (view.app, view.environment, view.service) == ("shop", "production", "shop-production")
    assert s.ready_uids(slices) == {"a"} and s.listed_uids(slices) == {"a", "b", "c"}
    assert s.view(ENV, None, [], pods, 2.0).listeners == ()
