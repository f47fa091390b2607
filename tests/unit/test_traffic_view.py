"""The traffic view both runtimes return (cairn/runtime.py): one shape, stable JSON keys."""

from __future__ import annotations

import json
from typing import Any

from cairn.runtime import BackendView, EnvRef, ListenerView, TrafficView
from cairn.runtimes.kubernetes import service

ENV = EnvRef("c", "shop", "production")


def _keys(data: Any, name: str = "") -> Any:
    """The key structure of a JSON document: each object's keys (not a free-form mapping's, such
    as an endpoint's ``conditions``), and each list's first element."""
    if isinstance(data, dict):
        return "mapping" if name == "conditions" else {k: _keys(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [_keys(data[0])] if data and isinstance(data[0], dict) else "list"
    return None


def _local() -> TrafficView:
    """As the local balancer reports one listener with one counted backend."""
    backend = BackendView(instance="shop-production-0", address="10.213.1.2:8080", state="ready", open=1,
                          connections=7, refused=0)
    listener = ListenerView(address="127.0.0.1:8080", host_port=8080, listening=True, open=1, connections=7,
                            dropped=0, backends=(backend,))
    return TrafficView(ENV.cluster, ENV.app, ENV.environment, policy="least-connections", counts="connections",
                       listeners=(listener,))


def _kubernetes() -> TrafficView:
    svc = {"metadata": {"name": "shop-production"},
           "spec": {"type": "NodePort", "clusterIP": "10.96.0.7",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}}
    slices = [{"endpoints": [{"targetRef": {"uid": "a"}, "conditions": {"ready": True, "serving": True, "terminating": False}}]}]
    pod = {"metadata": {"name": "shop-production-0-0123456789ab", "uid": "a", "labels": {"cairn.dev/version": "v1"}},
           "status": {"podIP": "10.0.0.1"}}
    return service.view(ENV, svc, slices, [pod], drain_s=2.0)


def test_both_runtimes_views_have_the_same_json_keys_and_read_back_as_they_were() -> None:
    local, kube = _local().to_dict(), _kubernetes().to_dict()
    assert _keys(local) == _keys(kube)
    for view in (_local(), _kubernetes()):
        carried = json.loads(json.dumps(view.to_dict()))  # as the agent's socket or `cairn traffic --json` carry it
        assert TrafficView.from_dict(carried) == view


def test_what_a_runtime_does_not_count_is_null_not_missing() -> None:
    kube = _kubernetes().to_dict()
    (listener,) = kube["listeners"]
    assert kube["counts"] is None and listener["connections"] is None and listener["backends"][0]["open"] is None
    assert listener["also"] == ["node port 30080"] and listener["backends"][0]["version"] == "v1"
    local = _local().to_dict()
    assert local["drain_s"] is None and local["service"] is None and local["listeners"][0]["also"] == []
