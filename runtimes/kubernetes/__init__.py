"""The kubernetes runtime: instances as Pods, through the official client.

See README.md in this folder for how an environment's configuration maps onto Kubernetes objects.
"""

from cairn.runtimes.kubernetes.runtime import KubernetesRuntime

__all__ = ["KubernetesRuntime"]
