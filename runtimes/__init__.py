"""Where instances run. ``connect`` turns a cluster's spec into the Runtime that serves it."""

from __future__ import annotations

from cairn.config import ClusterSpec
from cairn.runtime import Runtime


def connect(cluster: ClusterSpec, *, kubeconfig: str | None = None) -> Runtime:
    """The Runtime for ``cluster``. Every local cluster is served by this machine's node agent:
    instances are keyed by cluster, app and environment, so two local clusters never share one."""
    if cluster.runtime == "local":
        from cairn.runtimes.local import LocalRuntime

        return LocalRuntime(autostart=True)
    from cairn.runtimes.kubernetes import KubernetesRuntime

    return KubernetesRuntime(kubeconfig=kubeconfig, context=cluster.context, namespace=cluster.namespace,
                             service_type=cluster.service_type, drain_s=cluster.drain_s)
