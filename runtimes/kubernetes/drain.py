"""An environment's Service, and taking pods out of it before they stop (no 5xx race).

Kubernetes removes a deleted pod from its Service's endpoints *while* the kubelet runs its
PreStop and sends SIGTERM: kube-proxy (and any external load balancer) may still send new
connections to a pod that is already shutting down. cairn closes that race itself: before it
deletes a pod it sets the label the Service selects on (``cairn.dev/serving``) to ``false``,
waits until the EndpointSlice controller no longer lists the pod, then waits ``drain_s`` more
for the data plane (kube-proxy's iptables sync is rate-limited to one per second by default)
and only then deletes it. The first wait is observed, not guessed; only the second is a delay.
When ``ensure`` replaces pods it creates their replacements as soon as the old ones have left
the Service, so a batch costs the longer of the drain and the new pods' start, not their sum.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from cairn.config import DRAIN_DEFAULT_S, ServiceType
from cairn.revision import Revision
from cairn.runtime import EnvRef, TrafficView
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes import service as s
from cairn.runtimes.kubernetes.api import Api, pool

LEAVE_TIMEOUT_S = 30.0  # the EndpointSlice controller normally takes milliseconds
POLL_S = 0.05


class Traffic:
    def __init__(self, api: Api, service_type: ServiceType = "ClusterIP", drain_s: float | None = None) -> None:
        self.api, self.service_type = api, service_type
        self.drain_s = DRAIN_DEFAULT_S if drain_s is None else drain_s

    def publish(self, revision: Revision) -> None:
        """Apply the environment's Service from the revision's port mapping (none without ports)."""
        ports = revision.spec.ports
        if ports:
            self.api.apply(s.service(revision.app, revision.environment, self.api.namespace, ports, self.service_type))
        else:
            self.api.delete("Service", s.service_name(revision.app, revision.environment))

    def withdraw(self, env: EnvRef) -> None:
        """The environment has no pod left: its Service goes too."""
        self.api.delete("Service", s.service_name(env.app, env.environment))

    def drain(self, pods: Sequence[dict[str, Any]]) -> None:
        """Take ``pods`` out of their Service and wait until traffic no longer reaches them."""
        self.leave(pods)()

    def leave(self, pods: Sequence[dict[str, Any]]) -> Callable[[], None]:
        """Take ``pods`` out of their Service now; returns the wait until traffic no longer reaches
        them, so a caller can start their replacements meanwhile. ``drain_s`` 0 turns both off: the
        pods are deleted at once, as Kubernetes itself does (for clusters where nothing routes
        through kube-proxy, such as kwok's fake nodes)."""
        if not self.drain_s:
            return _nothing
        serving = [p for p in pods if (p["metadata"].get("labels") or {}).get(s.SERVING) == "true"
                   and not p["metadata"].get("deletionTimestamp")]
        if not serving:
            return _nothing
        labels = serving[0]["metadata"]["labels"]
        name = s.service_name(labels[m.APP], labels[m.ENV])
        if self.api.service(name) is None:
            return _nothing  # nothing selects the pods: nothing to leave
        uids = {p["metadata"]["uid"] for p in serving}
        routed = uids & s.ready_uids(self.api.endpoint_slices(name))
        with pool(len(serving)) as workers:
            list(workers.map(lambda p: self.api.label(p["metadata"]["name"], {s.SERVING: "false"}), serving))

        def settle() -> None:
            deadline = time.monotonic() + LEAVE_TIMEOUT_S
            while uids & s.listed_uids(self.api.endpoint_slices(name)) and time.monotonic() < deadline:
                time.sleep(POLL_S)
            if routed:
                time.sleep(self.drain_s)  # only pods that were taking traffic need the data plane to catch up

        return settle

    def view(self, env: EnvRef, pods: Sequence[dict[str, Any]]) -> TrafficView:
        name = s.service_name(env.app, env.environment)
        found = self.api.service(name)
        slices = self.api.endpoint_slices(name) if found else []
        return s.view(env, found, slices, pods, self.drain_s)


def _nothing() -> None:
    return None
