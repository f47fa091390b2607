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

    # Hook for issue 18's cluster field: the host roots a cluster allows, refused again when pods
    # are built (the config layer checks at apply); None, no field yet, leaves host paths unchecked.
    allowed_host_paths = getattr(cluster, "allowed_host_paths", None)
    return KubernetesRuntime(kubeconfig=kubeconfig, context=cluster.context, namespace=cluster.namespace,
                             service_type=cluster.service_type, drain_s=cluster.drain_s, allowed_host_paths=allowed_host_paths)
