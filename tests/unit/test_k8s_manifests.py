"""The pure mapping from a revision to Kubernetes objects."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from cairn.config import EnvironmentSpec
from cairn.errors import PermanentError
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


# --- isolation: the local runtime's runc container, in pod terms, admitted by Pod Security -----
# runc's default set minus NET_RAW, which Pod Security "baseline" refuses; "restricted" admits only
# NET_BIND_SERVICE, all a non-root pod gets.
ROOT_SET = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "SETGID", "SETUID", "SETFCAP",
            "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
# What Pod Security "baseline" lets a container add (kubernetes.io/docs/concepts/security/pod-security-standards).
BASELINE_ADDABLE = ROOT_SET
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
def test_every_container_of_a_root_pod_gets_runcs_powers_less_net_raw_and_no_more(shape: str) -> None:
    pod = SHAPES[shape]()
    assert len(_containers(pod)) >= 1
    for c in _containers(pod):
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["privileged"] is False, c["name"]
        assert ctx["procMount"] == "Default", c["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"], c["name"]
        assert set(ctx["capabilities"]["add"]) == ROOT_SET and set(ctx["capabilities"]["add"]) <= BASELINE_ADDABLE, c["name"]
        assert not {"runAsUser", "runAsGroup", "runAsNonRoot", "seLinuxOptions", "windowsOptions"} & set(ctx), "the image's user, as locally"


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_the_pod_shares_nothing_with_the_node_or_the_cluster_api(shape: str) -> None:
    spec = SHAPES[shape]()["spec"]
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert spec["hostNetwork"] is spec["hostPID"] is spec["hostIPC"] is spec["shareProcessNamespace"] is False
    assert spec["automountServiceAccountToken"] is False and spec["enableServiceLinks"] is False
    assert not [v for v in spec["volumes"] if "projected" in v or "secret" in v], "no token or secret volume"


CAPS_ABSENT = ["SYS_ADMIN", "SYS_PTRACE", "SYS_MODULE", "NET_ADMIN", "NET_RAW", "SYS_RAWIO", "SYS_TIME", "SYS_BOOT",
               "DAC_READ_SEARCH", "BPF", "PERFMON", "SYSLOG"]


@pytest.mark.parametrize("cap", CAPS_ABSENT, ids=[f"{c} is never added" for c in CAPS_ABSENT])
def test_dangerous_powers_are_never_added(cap: str) -> None:
    pods = [m.pod(revision(), 0, "ns"), m.pod(revision(user="1000"), 0, "ns")]
    assert cap not in m.ROOT_CAPABILITIES and cap not in str([_containers(p) for p in pods])


def test_each_container_gets_its_own_security_context() -> None:
    first, second = m.container_security(), m.container_security()
    first["capabilities"]["add"].append("SYS_ADMIN")
    assert "SYS_ADMIN" not in second["capabilities"]["add"], "a caller editing one pod must not edit the next"


# --- who the pod runs as ---------------------------------------------------------------------------
@pytest.mark.parametrize(("user", "image_user", "context", "caps"), [
    pytest.param(None, None, {}, ROOT_SET, id="no user and an image without one: the image's root, runc's powers"),
    pytest.param("1000:1001", None, {"runAsUser": 1000, "runAsGroup": 1001, "runAsNonRoot": True}, {"NET_BIND_SERVICE"},
                 id="a non-root user sets uid and gid and promises non-root with only NET_BIND_SERVICE"),
    pytest.param("1000", "0", {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True}, {"NET_BIND_SERVICE"},
                 id="the environment's user wins over the image's"),
    pytest.param("0", "1000", {"runAsUser": 0, "runAsGroup": 0}, ROOT_SET,
                 id="user root written out runs as root, promising nothing"),
    pytest.param(None, "1000", {"runAsNonRoot": True}, {"NET_BIND_SERVICE"},
                 id="an image declaring a numeric non-root user is promised non-root, its ids kept"),
    pytest.param(None, "1000:1000", {"runAsNonRoot": True}, {"NET_BIND_SERVICE"},
                 id="an image user with a group counts by its uid"),
    pytest.param(None, "app", {}, ROOT_SET,
                 id="an image naming its user cannot be promised non-root: the kubelet could not check it"),
    pytest.param(None, "0:0", {}, ROOT_SET, id="an image declaring root gets runc's powers"),
])
def test_the_user_maps_to_the_pods_security_context(user: Any, image_user: str | None, context: dict[str, Any],
                                                     caps: set[str]) -> None:
    rev = revision("code-package", image="cairn/python:3.11", deploy_root="/acs/code", user=user)
    pod = m.pod(rev, 0, "ns", image_user=image_user)
    assert pod["spec"]["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}, **context}
    for c in _containers(pod):  # app, unpack, logs: all run as the pod's user
        assert set(c["securityContext"]["capabilities"]["add"]) == caps, c["name"]
        assert not {"runAsUser", "runAsGroup"} & set(c["securityContext"]), "the pod's user, not a container's own"


@pytest.mark.parametrize(("changes", "tmp_volume"), [
    pytest.param({"read_only_root": True, "logs": {"files": []}}, "tmp",
                 id="a read-only root gets an emptyDir at /tmp so the app can write temp files"),
    pytest.param({"read_only_root": True, "logs": {"files": ["/tmp/app.log"]}}, "tmp",
                 id="log files in /tmp share that emptyDir with the sidecar"),
    pytest.param({"read_only_root": True, "dirs": [{"path": "/tmp", "host_path": "/srv/tmp"}], "logs": {"files": []}}, "dir-0",
                 id="a directory mount at /tmp is kept, not shadowed"),
    pytest.param({"logs": {"files": []}}, None, id="a writable root adds nothing at /tmp"),
])
def test_read_only_root_maps_to_the_app_container(changes: dict[str, Any], tmp_volume: str | None) -> None:
    pod = m.pod(revision(**changes), 0, "ns")
    app = app_container(pod)
    assert app["securityContext"]["readOnlyRootFilesystem"] is bool(changes.get("read_only_root"))
    at_tmp = [v["name"] for v in app["volumeMounts"] if v["mountPath"] == "/tmp"]
    assert at_tmp == ([tmp_volume] if tmp_volume else [])
    if tmp_volume == "tmp":
        assert {"name": "tmp", "emptyDir": {}} in pod["spec"]["volumes"]
    for c in pod["spec"]["containers"]:
        if c["name"] == "logs":
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


# --- host paths ------------------------------------------------------------------------------------
def test_a_host_path_is_mounted_as_an_existing_directory_never_created() -> None:
    volumes = {v["name"]: v for v in m.pod(revision(), 0, "ns")["spec"]["volumes"]}
    assert volumes["dir-0"]["hostPath"] == {"path": "/srv/data", "type": "Directory"}


@pytest.mark.parametrize(("host_path", "allowed", "ok"), [
    pytest.param("/srv/data", None, True, id="a cluster stating no roots leaves host paths to the config layer"),
    pytest.param("/srv/data", ["/srv/data"], True, id="the root itself is allowed"),
    pytest.param("/srv/data/app", ["/var/lib/cairn", "/srv/data/"], True, id="a path under any root is allowed"),
    pytest.param("/srv/database", ["/srv/data"], False, id="a sibling sharing the root's prefix is refused"),
    pytest.param("/srv", ["/srv/data"], False, id="the root's parent is refused"),
    pytest.param("/srv//data/../../etc", ["/srv/data"], False, id="dot segments and doubled slashes are normalised first"),
    pytest.param("/srv/data", [], False, id="a cluster allowing no roots refuses every host path"),
])
def test_a_host_path_outside_the_clusters_roots_is_refused(host_path: str, allowed: list[str] | None, ok: bool) -> None:
    rev = revision(dirs=[{"path": "/data", "host_path": "/srv/data"}])
    # The path set past the config's own normalisation, so the builder's check is what is exercised.
    rev = rev.model_copy(update={"spec": rev.spec.model_copy(update={"dirs": [
        rev.spec.dirs[0].model_copy(update={"host_path": host_path})]})})
    if ok:
        assert m.pod(rev, 0, "ns", allowed_host_paths=allowed)["spec"]["volumes"]
        return
    with pytest.raises(PermanentError) as caught:
        m.pod(rev, 0, "ns", allowed_host_paths=allowed)
    assert f"dirs[0].host_path {host_path}" in caught.value.message and "allowed_host_paths" in (caught.value.hint or "")


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
