"""The pure mapping from a revision to Kubernetes objects."""

from __future__ import annotations

import base64
from typing import Any

from cairn.config import EnvironmentSpec
from cairn.revision import Revision
from cairn.runtimes.kubernetes import manifests as m

SPEC: dict[str, Any] = {
    "cluster": "k", "image": "cairn/demo-app:latest", "instances": 2, "cpu": 0.25, "memory_mb": 96,
    "ports": [{"container_port": 8080, "name": "http"}],
    "env": {"MODE": "test"}, "secret_env": {"DB_PASSWORD": "shop-db"},
    "files": [{"path": "/etc/app/app.conf", "content": "a=1\n"}], "dirs": [{"path": "/data", "host_path": "/srv/data"}],
    "logs": {"files": ["/var/log/app/*.log", "/data/out.log"]},
    "health_check": {"http": {"port": 8080, "path": "/healthz"}, "period_s": 0.5, "timeout_s": 1.5, "failure_threshold": 3},
    "lifecycle": {"post_start": {"exec": {"command": ["touch", "/tmp/up"]}}, "pre_stop": {"exec": {"command": ["sleep", "1"]}},
                  "termination_grace_period_s": 2.5},
}


def revision(deploy_type: str = "image", **changes: Any) -> Revision:
    return Revision(app="shop", environment="production", deploy_type=deploy_type, version="v2",  # type: ignore[arg-type]
                    spec=EnvironmentSpec.model_validate({**SPEC, **changes}),
                    package_digest="ab" * 32 if deploy_type == "code-package" else None)


def app_container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "app")


def test_pod_names_labels_and_annotations_tie_it_to_app_env_revision_and_order() -> None:
    rev = revision()
    pod = m.pod(rev, 3, "ns", order="0f1e-order")
    meta = pod["metadata"]
    # The revision in the name lets a replacement be created while its predecessor still stops.
    assert meta["name"] == f"shop-production-3-{rev.short}" and meta["namespace"] == "ns"
    assert meta["labels"] == {"app.kubernetes.io/managed-by": "cairn", "cairn.dev/app": "shop", "cairn.dev/environment": "production",
                              "cairn.dev/revision": rev.short, "cairn.dev/slot": "3", "cairn.dev/version": "v2",
                              "cairn.dev/order": "0f1e-order", "cairn.dev/serving": "true"}
    assert meta["annotations"]["cairn.dev/revision-digest"] == rev.digest
    assert meta["annotations"]["cairn.dev/image"] == "cairn/demo-app:v2"


def test_container_image_resources_ports_env_and_secret_refs() -> None:
    c = app_container(m.pod(revision(), 0, "ns"))
    assert c["image"] == "cairn/demo-app:v2" and c["imagePullPolicy"] == "IfNotPresent"
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "250m", "memory": "96Mi"}
    assert c["ports"] == [{"containerPort": 8080, "protocol": "TCP", "name": "http"}]
    assert {"name": "MODE", "value": "test"} in c["env"]
    secret_ref = next(e for e in c["env"] if e["name"] == "DB_PASSWORD")
    assert secret_ref == {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": m.secret_name(revision()), "key": "DB_PASSWORD"}}}


def test_a_secret_value_lives_only_in_the_secret() -> None:
    rev = revision()
    secret = m.secret(rev, "ns", {"DB_PASSWORD": "hunter2-value"})
    assert base64.b64decode(secret["data"]["DB_PASSWORD"]).decode() == "hunter2-value"
    assert "hunter2-value" not in str(m.pod(rev, 0, "ns")) and "hunter2-value" not in str(m.files_configmap(rev, "ns"))


def test_probes_keep_thresholds_in_whole_seconds_and_liveness_starts_after_the_budget() -> None:
    c = app_container(m.pod(revision(), 0, "ns"))
    ready, live = c["readinessProbe"], c["livenessProbe"]
    assert ready == {"httpGet": {"path": "/healthz", "port": 8080, "scheme": "HTTP"}, "initialDelaySeconds": 0,
                     "periodSeconds": 1, "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3}
    budget = revision().spec.health_check.budget_s  # type: ignore[union-attr]
    assert live["initialDelaySeconds"] >= budget and live["successThreshold"] == 1
    exec_check = {"http": None, "exec": {"command": ["pg_isready"]}}
    assert "exec" in app_container(m.pod(revision(health_check=exec_check), 0, "ns"))["readinessProbe"]
    assert "readinessProbe" not in app_container(m.pod(revision(health_check=None), 0, "ns"))


def test_hooks_grace_and_mounts() -> None:
    pod = m.pod(revision(), 0, "ns")
    c = app_container(pod)
    assert pod["spec"]["terminationGracePeriodSeconds"] == 3
    post = c["lifecycle"]["postStart"]["exec"]["command"]
    assert post[:2] == ["sh", "-c"] and post[-2:] == ["touch", "/tmp/up"] and "/dev/termination-log" in post[2]
    assert c["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "1"]}}
    mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
    assert mounts["/etc/app/app.conf"] == {"name": "files", "mountPath": "/etc/app/app.conf", "subPath": "file-0", "readOnly": True}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["dir-0"]["hostPath"] == {"path": "/srv/data", "type": "DirectoryOrCreate"}
    assert m.files_configmap(revision(), "ns")["data"] == {"file-0": "a=1\n"}


def test_log_files_are_followed_by_a_sidecar_sharing_their_directories() -> None:
    pod = m.pod(revision(), 0, "ns")
    logs = next(c for c in pod["spec"]["containers"] if c["name"] == "logs")
    shared = {v["mountPath"]: v["name"] for v in logs["volumeMounts"]}
    assert shared == {"/var/log/app": "logs-0", "/data": "dir-0"}, "an emptyDir, or the directory mount that already holds it"
    assert {"name": "logs-0", "mountPath": "/var/log/app"} in app_container(pod)["volumeMounts"]
    assert "/var/log/app/*.log" in logs["command"][2].replace("'", "")
    assert not [c for c in m.pod(revision(logs={"files": []}), 0, "ns")["spec"]["containers"] if c["name"] == "logs"]


def test_code_package_is_unpacked_by_an_init_container_after_checking_its_digest() -> None:
    rev = revision("code-package", image="cairn/python:3.11", deploy_root="/acs/code")
    pod = m.pod(rev, 0, "ns")
    [init] = pod["spec"]["initContainers"]
    assert init["image"] == "cairn/python:3.11" and "ab" * 32 in init["command"][2] and "sha256sum -c" in init["command"][2]
    assert app_container(pod)["workingDir"] == "/acs/code"
    cm = m.package_configmap(rev, "ns", b"tar-bytes")
    assert cm["immutable"] and base64.b64decode(cm["binaryData"]["package.tar.gz"]) == b"tar-bytes"


def test_pod_defaults_place_pods_and_nothing_else() -> None:
    defaults = {"nodeSelector": {"type": "kwok"}, "tolerations": [{"key": "k", "operator": "Exists"}], "hostNetwork": True}
    spec = m.pod(revision(), 0, "ns", defaults=defaults)["spec"]
    assert spec["nodeSelector"] == {"type": "kwok"} and spec["tolerations"] == [{"key": "k", "operator": "Exists"}]
    assert "hostNetwork" not in spec


def test_label_values_are_valid() -> None:
    assert m.label_value("v1.") == "v1" and m.label_value("a" * 80) == "a" * 63 and m.label_value("x/y z") == "x-y-z"
