"""The test clusters themselves: real node behaviour, kwok scale, two separate clusters.

Every wait is a poll or a watch against a deadline; a condition that never comes fails
the test with the last state seen.
"""

from __future__ import annotations

import calendar
import json
import pathlib
import time
import urllib.request
import uuid

import pytest

from tests.behaviour.conftest import k8s_images  # noqa: F401 - the node pulls the session registry's images

pytestmark = pytest.mark.k8s


def wait_until(what: str, probe, timeout: float, interval: float = 0.5):
    """Return probe()'s first truthy value; fail with its last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = probe()
        except AssertionError as e:  # kubectl failing is "not yet", with the reason kept
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}"[:4000])
        time.sleep(interval)


def ready_condition(obj: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in obj["status"].get("conditions", []))


@pytest.fixture(scope="module")
def ns_a(k8s_cluster):
    name = f"cairn-test-{uuid.uuid4().hex[:8]}"
    k8s_cluster.kubectl("a", "create", "namespace", name)
    wait_until("default service account", lambda: k8s_cluster.kubectl(
        "a", "-n", name, "get", "serviceaccount", "default", check=False).returncode == 0, 60)
    yield name
    k8s_cluster.kubectl("a", "delete", "namespace", name, "--wait=false", check=False)


def apply(k8s_cluster, cluster: str, obj: dict) -> None:
    k8s_cluster.kubectl(cluster, "apply", "-f", "-", input=json.dumps(obj))


@pytest.fixture(scope="module")
def demo_image(k8s_images):  # noqa: F811 - the imported fixture
    """cairn.images.build's demo app, as the node pulls it from the session's loopback registry."""
    return f"{k8s_images.registry}/cairn/demo-app:v1"


def demo_container(image: str, **env: str) -> dict:
    return {
        "name": "app",
        "image": image,
        "imagePullPolicy": "IfNotPresent",  # pulled once from the session's registry (k8s_images)
        "env": [{"name": k, "value": v} for k, v in env.items()],
        "ports": [{"containerPort": 8080}],
    }


def pod_of(k8s_cluster, ns: str, selector: str) -> dict:
    pods = k8s_cluster.kubectl_json("a", "-n", ns, "get", "pods", "-l", selector)["items"]
    assert len(pods) == 1, f"expected one pod for {selector}, got {[p['metadata']['name'] for p in pods]}"
    return pods[0]


# ----------------------------------------------------------------------------- nodes

def test_real_node_and_kwok_nodes_are_ready(k8s_cluster):
    nodes = k8s_cluster.kubectl_json("a", "get", "nodes")["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert k8s_cluster.a.real_nodes, "cluster a must have a real node"
    for name in k8s_cluster.a.real_nodes:
        node = by_name[name]
        assert ready_condition(node), f"real node {name} not Ready: {node['status'].get('conditions')}"
        assert node["metadata"]["labels"]["cairn.dev/node-kind"] == "real"
        # A real kubelet reports its runtime and version; kwok nodes report kwok's.
        info = node["status"]["nodeInfo"]
        assert info["containerRuntimeVersion"].startswith("containerd://"), info
        assert info["kubeletVersion"] == k8s_cluster.versions["KUBERNETES_VERSION"], info
        assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert len(k8s_cluster.a.kwok_nodes) >= 1
    for name in k8s_cluster.a.kwok_nodes:
        node = by_name[name]
        assert ready_condition(node), f"kwok node {name} not Ready"
        assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    table = k8s_cluster.kubectl("a", "get", "nodes", "--no-headers").stdout
    for name in k8s_cluster.a.real_nodes + k8s_cluster.a.kwok_nodes:
        assert any(line.split()[:2] == [name, "Ready"] for line in table.splitlines()), table


def test_cluster_b_is_a_separate_cluster(k8s_cluster):
    assert k8s_cluster.kubeconfig_a != k8s_cluster.kubeconfig_b
    uid_a = k8s_cluster.kubectl_json("a", "get", "namespace", "kube-system")["metadata"]["uid"]
    uid_b = k8s_cluster.kubectl_json("b", "get", "namespace", "kube-system")["metadata"]["uid"]
    assert uid_a != uid_b, "a and b answer from the same etcd"
    nodes_b = {n["metadata"]["name"]: n for n in k8s_cluster.kubectl_json("b", "get", "nodes")["items"]}
    assert set(nodes_b) == set(k8s_cluster.b.kwok_nodes)
    assert all(ready_condition(n) for n in nodes_b.values())
    # Something made in b is not in a.
    name = f"cairn-only-b-{uuid.uuid4().hex[:6]}"
    k8s_cluster.kubectl("b", "create", "namespace", name)
    try:
        assert k8s_cluster.kubectl("a", "get", "namespace", name, check=False).returncode != 0
    finally:
        k8s_cluster.kubectl("b", "delete", "namespace", name, "--wait=false")


# -------------------------------------------------------------------- real node: app

@pytest.fixture(scope="module")
def demo(k8s_cluster, ns_a, demo_image):
    """A Deployment of the demo app on the real node; not Ready until /tmp/healthy exists."""
    container = demo_container(demo_image, APP_VERSION="9.9.9-cluster-test", DEMO_HEALTH_FILE="/tmp/healthy")
    container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080},
                                   "periodSeconds": 1, "failureThreshold": 1}
    container["resources"] = {"requests": {"cpu": "10m", "memory": "32Mi"},
                              "limits": {"cpu": "500m", "memory": "128Mi"}}
    apply(k8s_cluster, "a", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "demo", "namespace": ns_a},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {"nodeSelector": {"cairn.dev/node-kind": "real"},
                         "terminationGracePeriodSeconds": 5, "containers": [container]},
            },
        },
    })
    return ns_a


def test_http_readiness_probe_gates_the_deployment(k8s_cluster, demo):
    ns = demo
    # The kubelet's HTTP probe gets 503 while the health file is missing...
    def probe_failed():
        pod = pod_of(k8s_cluster, ns, "app=demo")
        events = k8s_cluster.kubectl_json("a", "-n", ns, "get", "events", "--field-selector",
                                          f"involvedObject.name={pod['metadata']['name']},reason=Unhealthy")
        return pod if any("503" in e["message"] for e in events["items"]) else None

    pod = wait_until("a failed readiness probe (503)", probe_failed, 120)
    assert pod["spec"]["nodeName"] in k8s_cluster.a.real_nodes
    assert not ready_condition(pod), "pod Ready although its readiness probe fails"
    dep = k8s_cluster.kubectl_json("a", "-n", ns, "get", "deployment", "demo")
    assert not dep["status"].get("readyReplicas")
    # ...and once the app reports healthy the same probe makes it Ready.
    k8s_cluster.kubectl("a", "-n", ns, "exec", pod["metadata"]["name"], "--", "touch", "/tmp/healthy")
    wait_until("deployment demo available", lambda: k8s_cluster.kubectl_json(
        "a", "-n", ns, "get", "deployment", "demo")["status"].get("availableReplicas") == 1, 60)
    assert ready_condition(pod_of(k8s_cluster, ns, "app=demo"))


def test_exec_reaches_the_app_and_logs_show_requests(k8s_cluster, demo):
    ns = demo
    name = wait_until("the demo pod running", lambda: (lambda p: p["metadata"]["name"] if p["status"].get(
        "phase") == "Running" else None)(pod_of(k8s_cluster, ns, "app=demo")), 120)
    # Runs alone too: make the app healthy (the readiness test may not have run).
    k8s_cluster.kubectl("a", "-n", ns, "exec", name, "--", "touch", "/tmp/healthy")
    wait_until("deployment demo available", lambda: k8s_cluster.kubectl_json(
        "a", "-n", ns, "get", "deployment", "demo")["status"].get("availableReplicas") == 1, 60)
    out = k8s_cluster.kubectl("a", "-n", ns, "exec", name, "--", "wget", "-qO-",
                              "http://127.0.0.1:8080/version").stdout
    assert out.strip() == "9.9.9-cluster-test"
    # The pod is a real process on a real network: its IP answers from this host too.
    pod_ip = pod_of(k8s_cluster, ns, "app=demo")["status"]["podIP"]
    with urllib.request.urlopen(f"http://{pod_ip}:8080/healthz", timeout=5) as r:
        assert r.status == 200

    def logs_with_requests():
        text = k8s_cluster.kubectl("a", "-n", ns, "logs", name).stdout
        # The exec'd wget came from inside the pod; the kubelet's probes from the node.
        wget = '127.0.0.1 "GET /version HTTP/1.1" 200' in text
        probes = '"GET /healthz HTTP/1.1" 200' in text
        return text if wget and probes else None

    logs = wait_until("request lines in kubectl logs", logs_with_requests, 30)
    assert "demo app 9.9.9-cluster-test listening on :8080" in logs


def test_kube_proxy_routes_a_service_cluster_ip_from_a_pod_and_from_the_node(k8s_cluster, demo):
    ns = demo
    name = wait_until("the demo pod running", lambda: (lambda p: p["metadata"]["name"] if p["status"].get(
        "phase") == "Running" else None)(pod_of(k8s_cluster, ns, "app=demo")), 120)
    k8s_cluster.kubectl("a", "-n", ns, "exec", name, "--", "touch", "/tmp/healthy")
    apply(k8s_cluster, "a", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "demo", "namespace": ns},
                             "spec": {"selector": {"app": "demo"}, "ports": [{"port": 80, "targetPort": 8080}]}})
    ip = k8s_cluster.kubectl_json("a", "-n", ns, "get", "service", "demo")["spec"]["clusterIP"]

    def through_the_service():
        # From inside the pod to its own Service: the hairpin case, which masqueradeAll makes work.
        # (python, not busybox wget: the static wget segfaults here on a non-loopback address)
        out = k8s_cluster.kubectl("a", "-n", ns, "exec", name, "--", "python3", "-c",
                                  f"import urllib.request; print(urllib.request.urlopen('http://{ip}:80/version', "
                                  f"timeout=3).read().decode())", check=False).stdout
        return out.strip() == "9.9.9-cluster-test"

    wait_until(f"the ClusterIP {ip}:80 answering from a pod (kube-proxy's rules)", through_the_service, 60)
    with urllib.request.urlopen(f"http://{ip}/version", timeout=5) as r:  # and from the node itself
        assert r.read().decode().strip() == "9.9.9-cluster-test"


def test_pod_over_its_memory_limit_is_oomkilled(k8s_cluster, ns_a, demo_image):
    container = demo_container(demo_image, DEMO_GROW_MB_PER_S="24")
    container["resources"] = {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi"}}
    apply(k8s_cluster, "a", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "oom", "namespace": ns_a},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"cairn.dev/node-kind": "real"},
                 "containers": [container]},
    })

    def terminated():
        pod = k8s_cluster.kubectl_json("a", "-n", ns_a, "get", "pod", "oom")
        statuses = pod["status"].get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("terminated")

    term = wait_until("the oom pod to terminate", terminated, 120)
    assert term["reason"] == "OOMKilled", term
    assert term["exitCode"] == 137, term


def test_prestop_hook_runs_before_sigterm(k8s_cluster, ns_a, demo_image):
    # A hostPath on the real node (this machine) outlives the pod, so the order in which
    # the hook and the app wrote to it can be read after the pod is gone.
    host_dir = pathlib.Path(k8s_cluster.state_dir) / "a" / "hostpath" / f"{ns_a}-prestop"
    container = demo_container(demo_image, DEMO_LOG_FILE="/data/order.log", DEMO_SHUTDOWN_DELAY_S="0")
    container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    container["readinessProbe"] = {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
    container["lifecycle"] = {"preStop": {"exec": {"command": [
        "sh", "-c", 'echo "$(date +%s) preStop hook ran" >> /data/order.log; sleep 2']}}}
    apply(k8s_cluster, "a", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "prestop", "namespace": ns_a},
        "spec": {"nodeSelector": {"cairn.dev/node-kind": "real"}, "terminationGracePeriodSeconds": 30,
                 "volumes": [{"name": "data", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}}],
                 "containers": [container]},
    })
    wait_until("prestop pod Ready", lambda: ready_condition(
        k8s_cluster.kubectl_json("a", "-n", ns_a, "get", "pod", "prestop")), 120)
    k8s_cluster.kubectl("a", "-n", ns_a, "delete", "pod", "prestop", "--wait=false")
    wait_until("prestop pod gone", lambda: k8s_cluster.kubectl(
        "a", "-n", ns_a, "get", "pod", "prestop", check=False).returncode != 0, 90)
    lines = (host_dir / "order.log").read_text().splitlines()
    hook = [i for i, line in enumerate(lines) if "preStop hook ran" in line]
    term = [i for i, line in enumerate(lines) if "SIGTERM received" in line]
    assert hook, f"preStop hook never ran:\n{lines[-10:]}"
    assert term, f"app never got SIGTERM:\n{lines[-10:]}"
    assert hook[0] < term[0], f"SIGTERM came before the preStop hook:\n{lines[-10:]}"
    # The hook sleeps 2s: SIGTERM waited for it to finish.
    t_hook = int(lines[hook[0]].split()[0])
    # The image has no time zone data: the app logs UTC.
    t_term = calendar.timegm(time.strptime(lines[term[0]].split()[0], "%Y-%m-%dT%H:%M:%S"))
    assert t_term - t_hook >= 1, (lines[hook[0]], lines[term[0]])


# ----------------------------------------------------------------------- kwok scale

def test_200_pods_on_kwok_nodes_become_ready(k8s_cluster, ns_a, demo_image):
    from kubernetes import client, config, watch

    replicas = 200
    api = config.new_client_from_config(config_file=k8s_cluster.kubeconfig_a)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    container = demo_container(demo_image)
    container["imagePullPolicy"] = "IfNotPresent"
    apply(k8s_cluster, "a", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "scale", "namespace": ns_a},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "scale"}},
            "template": {
                "metadata": {"labels": {"app": "scale"}},
                "spec": {"nodeSelector": k8s_cluster.kwok_node_selector,
                         "tolerations": [k8s_cluster.kwok_toleration], "containers": [container]},
            },
        },
    })
    t0 = time.monotonic()
    deadline = t0 + 300
    ready = 0
    w = watch.Watch()
    while ready < replicas and time.monotonic() < deadline:
        for event in w.stream(apps.list_namespaced_deployment, ns_a, field_selector="metadata.name=scale",
                              timeout_seconds=max(1, int(deadline - time.monotonic()))):
            ready = event["object"].status.ready_replicas or 0
            if ready >= replicas:
                w.stop()
                break
    assert ready == replicas, f"only {ready}/{replicas} ready after {time.monotonic() - t0:.0f}s"
    pods = core.list_namespaced_pod(ns_a, label_selector="app=scale").items
    assert len(pods) == replicas
    kwok = set(k8s_cluster.a.kwok_nodes)
    assert all(p.spec.node_name in kwok for p in pods), {p.spec.node_name for p in pods} - kwok
    assert all(p.status.phase == "Running" for p in pods)
    print(f"{replicas} pods Ready on {len(kwok)} kwok nodes in {time.monotonic() - t0:.1f}s")
    apps.delete_namespaced_deployment("scale", ns_a)


def test_cluster_b_runs_pods_on_its_kwok_nodes(k8s_cluster, demo_image):
    ns = f"cairn-test-b-{uuid.uuid4().hex[:6]}"
    k8s_cluster.kubectl("b", "create", "namespace", ns)
    try:
        wait_until("default service account in b", lambda: k8s_cluster.kubectl(
            "b", "-n", ns, "get", "serviceaccount", "default", check=False).returncode == 0, 60)
        apply(k8s_cluster, "b", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
            "spec": {"replicas": 5, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"nodeSelector": k8s_cluster.kwok_node_selector,
                                           "tolerations": [k8s_cluster.kwok_toleration],
                                           "containers": [demo_container(demo_image)]}}},
        })
        wait_until("5 ready replicas in b", lambda: k8s_cluster.kubectl_json(
            "b", "-n", ns, "get", "deployment", "web")["status"].get("readyReplicas") == 5, 120)
        assert k8s_cluster.kubectl("a", "-n", ns, "get", "deployment", "web", check=False).returncode != 0
    finally:
        k8s_cluster.kubectl("b", "delete", "namespace", ns, "--wait=false", check=False)
