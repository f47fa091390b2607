"""Pod Security admission on the test cluster's real node: namespaces enforcing ``restricted`` and
``baseline`` (label ``pod-security.kubernetes.io/enforce``) run cairn's pods, and refuse the same
pods without the security context cairn writes, which proves the label is in force.

The demo images run as root (their config names no user), so under ``restricted`` the environment
sets ``user:``: "restricted" demands runAsNonRoot, which a root image cannot satisfy.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from cairn.config import EnvironmentSpec
from cairn.errors import PermanentError
from cairn.imageref import Reference
from cairn.revision import Revision
from cairn.runtime import EnvRef, Instance
from cairn.runtimes.kubernetes import KubernetesRuntime
from cairn.runtimes.kubernetes import manifests as m
from tests.behaviour.conftest import k8s_images  # noqa: F401 - the real node pulls the session's images

pytestmark = [pytest.mark.slow, pytest.mark.k8s]
LEVELS = ("restricted", "baseline")


def enforcing(k8s: Any, images: Any, level: str) -> KubernetesRuntime:
    """The kubernetes runtime on a namespace of cluster a that enforces Pod Security ``level``."""
    namespace = f"cairn-pss-{level}"
    k8s.kubectl("a", "create", "namespace", namespace, check=False)
    k8s.kubectl("a", "label", "--overwrite", "namespace", namespace,
                f"pod-security.kubernetes.io/enforce={level}", "pod-security.kubernetes.io/enforce-version=latest")
    runtime = KubernetesRuntime(kubeconfig=Path(k8s.kubeconfig_a).read_text(), context=k8s.context_a, namespace=namespace)
    runtime.registry = images.registry  # type: ignore[attr-defined]
    return runtime


def revision(runtime: Any, app: str, **spec: Any) -> Revision:
    image = str(Reference.parse("cairn/demo-app:v1", default_registry=runtime.registry, tagless=True))
    return Revision(app=app, environment="test", deploy_type="image", version="v1", spec=EnvironmentSpec.model_validate({
        "cluster": "k", "image": image, "instances": 2, "cpu": 0.1, "memory_mb": 128, "ports": [{"container_port": 8080}],
        "logs": {"files": ["/tmp/app.log"]}, "env": {"DEMO_LOG_FILE": "/tmp/app.log"},
        "health_check": {"http": {"port": 8080, "path": "/healthz"}, "period_s": 0.5, "timeout_s": 1, "failure_threshold": 40},
        "lifecycle": {"termination_grace_period_s": 1}, **spec}))


def wait_ready(runtime: KubernetesRuntime, env: EnvRef, count: int, timeout_s: float = 60) -> list[Instance]:
    deadline = time.monotonic() + timeout_s
    seen: list[Instance] = []
    while time.monotonic() < deadline:
        seen = runtime.observe(env)
        if len(seen) == count and all(i.ready for i in seen):
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{count} ready instances not seen in {timeout_s}s; last seen {seen}")


def server_dry_run(k8s: Any, pod: dict[str, Any]) -> Any:
    """The API server's admission of ``pod`` (PodSecurity runs on a dry run), storing nothing."""
    return k8s.kubectl("a", "create", "--dry-run=server", "-f", "-", input=json.dumps(pod), check=False)


@pytest.mark.parametrize("level", LEVELS, ids=[f"a namespace enforcing {level} runs cairn's pods and refuses them bare"
                                                 for level in LEVELS])
def test_cairns_pods_run_where_pod_security_is_enforced(level: str, k8s_cluster: Any, k8s_images: Any) -> None:  # noqa: F811
    runtime = enforcing(k8s_cluster, k8s_images, level)
    env = EnvRef(cluster="k", app=f"pss-{uuid.uuid4().hex[:6]}", environment="test")
    # A non-root user where "restricted" demands one; the image's root under "baseline".
    user = {"user": "1000:1000"} if level == "restricted" else {}
    rev = revision(runtime, env.app, read_only_root=True, **user)
    try:
        runtime.ensure(env, [0, 1], rev)
        first, _ = wait_ready(runtime, env, 2)
        seen = runtime.exec(env, first.name, ["sh", "-c", "id -u; id -g; touch /probe 2>/dev/null && echo wrote-root; "
                                              "touch /tmp/probe && echo wrote-tmp"], user="pss", timeout_s=20)
        expected_ids = ["1000", "1000"] if user else ["0", "0"]
        assert seen.stdout.split() == [*expected_ids, "wrote-tmp"], seen
    finally:
        runtime.terminate(env, [0, 1])

    # The same pod without the context cairn writes: refused, so the label is what admitted it.
    pod = m.pod(rev, 5, runtime.namespace)
    assert server_dry_run(k8s_cluster, pod).returncode == 0, "cairn's own pod passes admission as built"
    bare = copy.deepcopy(pod)
    if level == "restricted":
        bare["spec"]["securityContext"] = {}
        for container in bare["spec"]["containers"]:
            container.pop("securityContext")
    else:  # baseline admits the runtime's defaults; what it refuses is a power beyond them
        bare["spec"]["containers"][0]["securityContext"]["capabilities"]["add"].append("NET_RAW")
    refused = server_dry_run(k8s_cluster, bare)
    assert refused.returncode != 0 and f'violates PodSecurity "{level}:latest"' in refused.stderr, refused.stderr


def test_a_root_pod_in_a_restricted_namespace_is_refused_with_the_fix_and_nothing_is_stored(
        k8s_cluster: Any, k8s_images: Any) -> None:  # noqa: F811
    runtime = enforcing(k8s_cluster, k8s_images, "restricted")
    env = EnvRef(cluster="k", app=f"pss-{uuid.uuid4().hex[:6]}", environment="test")
    with pytest.raises(PermanentError) as caught:
        runtime.ensure(env, [0, 1], revision(runtime, env.app, secret_env={"DB_PASSWORD": "pss-db"}),
                       secrets={"DB_PASSWORD": "never-stored"})
    assert "Pod Security admission refused" in caught.value.message and "runAsNonRoot" in caught.value.message
    assert caught.value.hint and "user:" in caught.value.hint
    left = k8s_cluster.kubectl_json("a", "get", "pods,secrets,services,configmaps", "-n", runtime.namespace,
                                    "-l", f"cairn.dev/app={env.app}")["items"]
    assert left == [], "refused at admission: no pod, Secret, Service or ConfigMap was written"


@pytest.mark.prefect
def test_a_release_order_into_a_restricted_namespace_completes(platform: str, k8s_cluster: Any, k8s_images: Any) -> None:  # noqa: F811
    """The whole path (apply, order, flow, batches, health waits) into a namespace enforcing
    restricted, with the fields as a user writes them in the configuration."""
    from cairn.blocks import store
    from cairn.configfile import load_data
    from cairn.orders import actions
    from cairn.plan import PauseMode
    from cairn.status import Status

    runtime = enforcing(k8s_cluster, k8s_images, "restricted")
    store.set_secret("k8s-pss-kubeconfig", Path(k8s_cluster.kubeconfig_a).read_text())
    app = f"pss-{uuid.uuid4().hex[:6]}"
    env = {"cluster": "k8s-pss", "image": "cairn/demo-app:v1", "instances": 2, "cpu": 0.1, "memory_mb": 64,
           "user": "1000:1000", "read_only_root": True, "ports": [{"container_port": 8080}],
           "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 12},
           "lifecycle": {"termination_grace_period_s": 1}}
    store.apply(load_data({
        "clusters": [{"name": "k8s-pss", "runtime": "kubernetes", "kubeconfig_secret": "k8s-pss-kubeconfig",
                      "context": k8s_cluster.context_a, "namespace": runtime.namespace}],
        "apps": [{"name": app, "deploy_type": "image", "environments": {"production": env}}]}))
    try:
        order = actions.create_order(app, "production", "v1", 1, PauseMode.NONE)["id"]
        done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s=300)
        assert done["status"] == "completed", done["message"]
        pods = k8s_cluster.kubectl_json("a", "get", "pods", "-n", runtime.namespace, "-l", f"cairn.dev/app={app}")["items"]
        running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        assert len(running) == 2 and all(p["spec"]["securityContext"]["runAsUser"] == 1000 for p in running)
    finally:
        k8s_cluster.kubectl("a", "-n", runtime.namespace, "delete", "pods", "-l", f"cairn.dev/app={app}", "--grace-period=0",
                            "--force", "--wait=false", check=False)
