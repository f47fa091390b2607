"""Pure: an environment's Service, and what ``cairn traffic`` shows from it and its EndpointSlices.

One Service per environment selects the environment's pods that carry ``cairn.dev/serving=true``.
Every pod is created with it; before cairn deletes a pod it sets it to ``false``, so the pod
leaves the endpoints (and kube-proxy's rules) while it still serves, instead of racing its own
PreStop and SIGTERM (see drain.py and the README).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from cairn.config import PortMapping, ServiceType
from cairn.runtime import BackendState, BackendView, EnvRef, ListenerView, TrafficView
from cairn.runtimes.kubernetes import manifests as m

SERVING = m.SERVING
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # what the EndpointSlice controller labels slices with
MAX_NAME = 63


def service_name(app: str, environment: str) -> str:
    """``{app}-{env}`` when that is a valid Service name (DNS-1035: at most 63, starts with a letter);
    otherwise a shortened, still unique, form.

    >>> service_name("shop-api", "production")
    'shop-api-production'
    >>> service_name("7up", "test")
    'c-7up-test'
    >>> len(service_name("a" * 63, "production"))
    63
    """
    name = f"{app}-{environment}"
    if not name[0].isalpha():
        name = f"c-{name}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9].rstrip('-')}-{digest}"
    return name


def selector(app: str, environment: str) -> dict[str, str]:
    return {m.APP: app, m.ENV: environment, SERVING: "true"}


def port_name(port: PortMapping) -> str:
    """Multi-port Services need a name per port; ``port-8080`` when the mapping gives none."""
    return port.name or f"port-{port.container_port}"


def service(app: str, environment: str, namespace: str, ports: Sequence[PortMapping], service_type: ServiceType) -> dict[str, Any]:
    """The Service in front of the environment: each mapping's ``host_port`` (else its container
    port) forwards to the container port, as the local balancer's listener does."""
    spec: dict[str, Any] = {
        "type": service_type, "selector": selector(app, environment),
        "ports": [{"name": port_name(p), "protocol": "TCP", "port": p.host_port or p.container_port,
                   "targetPort": p.container_port} for p in ports],
    }
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": service_name(app, environment), "namespace": namespace,
                         "labels": m.env_labels(app, environment)},
            "spec": spec}


def ready_uids(slices: Sequence[Mapping[str, Any]]) -> set[str]:
    """Pods the slices list as ready: the ones kube-proxy sends new connections to."""
    return {e["targetRef"]["uid"] for s in slices for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready") and (e.get("targetRef") or {}).get("uid")}


def listed_uids(slices: Sequence[Mapping[str, Any]]) -> set[str]:
    return {e["targetRef"]["uid"] for s in slices for e in s.get("endpoints") or [] if (e.get("targetRef") or {}).get("uid")}


def _state(pod: Mapping[str, Any], endpoint: Mapping[str, Any] | None) -> BackendState:
    conditions = (endpoint or {}).get("conditions") or {}
    if conditions.get("ready"):
        return "ready"
    if conditions.get("terminating") or pod["metadata"].get("deletionTimestamp"):
        return "terminating"
    if (pod["metadata"].get("labels") or {}).get(SERVING) == "false":
        return "draining"  # cairn took it out of the Service; it still runs until deleted
    return "out"


def view(env: EnvRef, service_obj: Mapping[str, Any] | None, slices: Sequence[Mapping[str, Any]],
         pods: Sequence[Mapping[str, Any]], drain_s: float) -> TrafficView:
    """What the local balancer's snapshot shows, for a Service: one listener per Service port, one
    backend per pod. Kubernetes counts no connections, so those fields are None."""
    if service_obj is None:
        return TrafficView(env.cluster, env.app, env.environment, policy="no Service", drain_s=drain_s)
    spec, status = service_obj["spec"], service_obj.get("status") or {}
    cluster_ip = spec.get("clusterIP")
    ingress = [i.get("ip") or i.get("hostname") for i in (status.get("loadBalancer") or {}).get("ingress") or []]
    endpoints = {e["targetRef"]["uid"]: e for s in slices for e in s.get("endpoints") or [] if (e.get("targetRef") or {}).get("uid")}
    listeners = []
    for port in spec.get("ports") or []:
        backends = []
        for pod in pods:
            endpoint = endpoints.get(pod["metadata"]["uid"])
            backends.append(BackendView(
                instance=pod["metadata"]["name"],
                address=f"{(pod.get('status') or {}).get('podIP') or '-'}:{port['targetPort']}",
                state=_state(pod, endpoint), conditions=dict((endpoint or {}).get("conditions") or {}),
                version=(pod["metadata"].get("labels") or {}).get(m.VERSION),
            ))
        listening = bool(cluster_ip) and cluster_ip != "None"
        also = [f"node port {port['nodePort']}"] if port.get("nodePort") else []
        also += [f"{host}:{port['port']}" for host in ingress]
        listeners.append(ListenerView(
            address=f"{cluster_ip}:{port['port']}", host_port=port["port"], name=port.get("name"),
            listening=listening, error=None if listening else "no ClusterIP assigned",
            also=tuple(also), backends=tuple(backends),
        ))
    name = service_obj["metadata"]["name"]
    return TrafficView(env.cluster, env.app, env.environment, policy=f"Service {name}, {spec.get('type', 'ClusterIP')}, kube-proxy",
                       drain_s=drain_s, service=name, listeners=tuple(listeners))
