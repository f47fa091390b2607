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

    # The host roots the cluster allows are checked at apply (configfile) and again when pods are
    # built: a revision stored before a root was removed is refused too.
    allowed_host_paths = cluster.host_path_roots()
    return KubernetesRuntime(kubeconfig=kubeconfig, context=cluster.context, namespace=cluster.namespace,
                             service_type=cluster.service_type, drain_s=cluster.drain_s, allowed_host_paths=allowed_host_paths)
