"""The pure mapping from a revision to Kubernetes objects."""

from __future__ import annotations

import base64
from typing import Any

import pytest

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
    assert spec["hostNetwork"] is False, "placement only: a default asking for the host network is ignored"


def test_label_values_are_valid() -> None:
    assert m.label_value("v1.") == "v1" and m.label_value("a" * 80) == "a" * 63 and m.label_value("x/y z") == "x-y-z"


# --- isolation: the local runtime's runc container, in pod terms ---------------------------------
RUNC_DEFAULT = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
SHAPES: dict[str, Any] = {
    "image, app only": lambda: m.pod(revision(logs={"files": []}), 0, "ns"),
    "image with log sidecar": lambda: m.pod(revision(), 0, "ns"),
    "code package with unpack init container": lambda: m.pod(
        revision("code-package", image="cairn/python:3.11", deploy_root="/acs/code"), 0, "ns"),
    "pod defaults asking for host namespaces": lambda: m.pod(
        revision(), 0, "ns", defaults={"hostPID": True, "hostNetwork": True, "hostIPC": True,
                                       "securityContext": {"seccompProfile": {"type": "Unconfined"}}}),
}


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod["spec"].get("initContainers", []), *pod["spec"]["containers"]]


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_every_container_gets_runcs_powers_and_no_more(shape: str) -> None:
    pod = SHAPES[shape]()
    assert len(_containers(pod)) >= 1
    for c in _containers(pod):
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False, c["name"]
        assert ctx["procMount"] == "Default", c["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], c["name"]
        assert set(ctx["capabilities"]["add"]) == RUNC_DEFAULT, c["name"]
        assert not {"runAsUser", "runAsGroup", "seLinuxOptions", "windowsOptions"} & set(ctx), "the image's user, as locally"


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_the_pod_shares_nothing_with_the_node_or_the_cluster_api(shape: str) -> None:
    spec = SHAPES[shape]()["spec"]
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["hostNetwork"] is spec["hostPID"] is spec["hostIPC"] is spec["shareProcessNamespace"] is False
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert not [v for v in spec["volumes"] if "projected" in v or "secret" in v], "no token or secret volume"


CAPS_ABSENT = ["SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_ADMIN", "SYS_RAWIO", "SYS_TIME", "SYS_BOOT", "DAC_READ_SEARCH",
               "BPF", "PERFMON", "SYSLOG"]


@pytest.mark.parametrize("cap", CAPS_ABSENT, ids=CAPS_ABSENT)
def test_powers_beyond_runcs_default_set_are_never_added(cap: str) -> None:
    assert cap not in m.RUNC_CAPABILITIES and cap not in str(m.pod(revision(), 0, "ns")["spec"]["containers"])


def test_each_container_gets_its_own_security_context() -> None:
    first, second = m.container_security(), m.container_security()
    first["capabilities"]["add"].append("SYS_ADMIN")
    assert "SYS_ADMIN" not in second["capabilities"]["add"], "a caller editing one pod must not edit the next"


def test_run_as_sets_the_app_containers_user_and_group_only() -> None:
    pod = m.pod(revision(user={"uid": 1000, "gid": 1001}), 0, "ns")
    assert app_container(pod)["securityContext"]["runAsUser"] == 1000
    assert app_container(pod)["securityContext"]["runAsGroup"] == 1001
    assert "runAsUser" not in app_container(m.pod(revision(), 0, "ns"))["securityContext"], "the image's user by default"


def test_a_private_registry_login_lives_in_its_own_secret_the_pod_only_names() -> None:
    import json as _json

    rev = revision(image="127.0.0.1:5000/team/shop:v1", image_pull_secret="team-registry")
    pod = m.pod(rev, 0, "ns")
    assert pod["spec"]["imagePullSecrets"] == [{"name": m.pull_secret_name(rev)}]
    secret = m.pull_secret(rev, "ns", ("deployer", "pa55word"))
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = _json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert base64.b64decode(config["auths"]["127.0.0.1:5000"]["auth"]).decode() == "deployer:pa55word"
    assert "pa55word" not in str(pod) and "imagePullSecrets" not in m.pod(revision(), 0, "ns")["spec"]
