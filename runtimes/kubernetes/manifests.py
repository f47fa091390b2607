"""Pure translation of a revision into Kubernetes objects (plain dicts, ready for the API).

Nothing here talks to a cluster, so every mapping decision is unit-tested
(tests/unit/test_k8s_manifests.py). The package docstring explains the decisions.
"""

from __future__ import annotations

import base64
import json
import math
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from cairn import capabilities
from cairn.config import EnvironmentSpec, HealthCheck
from cairn.errors import PermanentError
from cairn.naming import instance_name
from cairn.paths import normalized, under_any
from cairn.revision import Revision

PREFIX = "cairn.dev/"
MANAGED = {"app.kubernetes.io/managed-by": "cairn"}
APP, ENV, SLOT, REVISION, VERSION, ORDER = (PREFIX + k for k in ("app", "environment", "slot", "revision", "version", "order"))
DIGEST, FAILED, IMAGE = PREFIX + "revision-digest", PREFIX + "failed", PREFIX + "image"
HEALTH_BUDGET = PREFIX + "health-budget-s"
SERVING = PREFIX + "serving"  # what the environment's Service selects on; "false" while cairn drains the pod
CONTAINER, UNPACK, LOGS = "app", "unpack", "logs"
PACKAGE_KEY = "package.tar.gz"
# An object is at most ~1.5 MiB in etcd; base64 grows the package by a third.
PACKAGE_LIMIT = 900 * 1024
POST_START_FAILED = "PostStart hook failed"
_LABEL_BAD = re.compile(r"[^A-Za-z0-9._-]")
# Capabilities: drop ALL, then add back cairn's set (cairn.capabilities: one rule for both runtimes).
ROOT_CAPABILITIES = capabilities.ROOT
NON_ROOT_CAPABILITIES = capabilities.NON_ROOT
TMP = "/tmp"  # writable (an emptyDir) when the root filesystem is read-only


def label_value(text: str | None) -> str:
    """``text`` as a label value (<= 63 chars, alphanumeric at both ends); "" when nothing is left."""
    value = _LABEL_BAD.sub("-", text or "")[:63]
    return value.strip("._-")


def env_selector(app: str, environment: str) -> str:
    return f"{APP}={app},{ENV}={environment}"


def env_labels(app: str, environment: str) -> dict[str, str]:
    return {**MANAGED, APP: app, ENV: environment}


def pod_name(revision: Revision, slot: int) -> str:
    """The pod of ``slot`` on ``revision``: the instance name plus the revision, so a replacement
    is created as soon as its predecessor is deleted, without waiting for the name to be free.

    The instance (``{app}-{env}-{slot}``, the slot's identity) is what cairn shows and accepts;
    the pod name is where it runs now.
    """
    return f"{instance_name(revision.app, revision.environment, slot)}-{revision.short}"


def secret_name(revision: Revision) -> str:
    return f"{revision.app}-{revision.environment}-env-{revision.short}"


def pull_secret_name(revision: Revision) -> str:
    return f"{revision.app}-{revision.environment}-pull-{revision.short}"


def files_name(revision: Revision) -> str:
    return f"{revision.app}-{revision.environment}-files-{revision.short}"


def package_name(revision: Revision) -> str:
    assert revision.package_digest
    return f"{revision.app}-{revision.environment}-pkg-{revision.package_digest[:12]}"


def _meta(name: str, namespace: str, labels: Mapping[str, str], annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def _revision_labels(revision: Revision) -> dict[str, str]:
    return {**env_labels(revision.app, revision.environment), REVISION: revision.short}


def secret(revision: Revision, namespace: str, values: Mapping[str, str]) -> dict[str, Any]:
    """The secret_env values, one key per variable: pods reference them with secretKeyRef, so no
    value is ever part of a pod manifest."""
    data = {var: base64.b64encode(values[var].encode()).decode() for var in revision.spec.secret_env}
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(secret_name(revision), namespace, _revision_labels(revision)), "data": data}


def pull_secret(revision: Revision, namespace: str, login: tuple[str, str]) -> dict[str, Any]:
    """The registry login as the kubelet reads one (``imagePullSecrets``): its own Secret, so no
    value is ever part of a pod manifest."""
    from cairn.imageref import Reference

    auth = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
    config = json.dumps({"auths": {Reference.parse(revision.image).registry: {"auth": auth}}})
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": _meta(pull_secret_name(revision), namespace, _revision_labels(revision)),
            "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()}}


def files_configmap(revision: Revision, namespace: str) -> dict[str, Any]:
    data = {f"file-{i}": f.content for i, f in enumerate(revision.spec.files)}
    return {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
            "metadata": _meta(files_name(revision), namespace, _revision_labels(revision)), "data": data}


def package_configmap(revision: Revision, namespace: str, package: bytes) -> dict[str, Any]:
    labels = {**env_labels(revision.app, revision.environment), PREFIX + "package": (revision.package_digest or "")[:12]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "immutable": True,
            "metadata": _meta(package_name(revision), namespace, labels),
            "binaryData": {PACKAGE_KEY: base64.b64encode(package).decode()}}


def _seconds(value: float, floor: int = 0) -> int:
    """Kubernetes counts probe and grace times in whole seconds: round up, never below ``floor``."""
    return max(floor, math.ceil(value - 1e-9))


def container_security(non_root: bool = False) -> dict[str, Any]:
    """Every container's security context, the local runtime's runc spec in Kubernetes terms: no
    privilege escalation (runc's noNewPrivileges), never privileged, the default /proc masks
    (procMount Default), and the capabilities above for a root or a ``non_root`` pod."""
    caps = NON_ROOT_CAPABILITIES if non_root else ROOT_CAPABILITIES
    return {"allowPrivilegeEscalation": False, "privileged": False, "procMount": "Default",
            "capabilities": {"drop": ["ALL"], "add": list(caps)}}


def runs_as_non_root(spec: EnvironmentSpec, image_user: str | None = None) -> bool:
    """Whether the pod can promise the kubelet a non-root user (``runAsNonRoot``): the environment's
    ``user`` is not root, or, without one, the image's configured user (``image_user``, the image
    config's ``User``) is a numeric non-zero uid. A named user ("app") cannot be promised: the
    kubelet refuses to start a runAsNonRoot container whose user it cannot check without the
    image's /etc/passwd."""
    if spec.user is not None:
        return not spec.user.root
    uid = (image_user or "").split(":", 1)[0]
    return uid.isascii() and uid.isdigit() and int(uid) != 0


def pod_security(spec: EnvironmentSpec, image_user: str | None = None) -> dict[str, Any]:
    """The pod's: the container runtime's default seccomp profile (the local runtime's too), and the
    environment's user for every container (the app, and the unpack and log helpers, which then
    write the code and read the logs as the app does)."""
    context: dict[str, Any] = {"seccompProfile": {"type": "RuntimeDefault"}}
    if spec.user is not None:
        context |= {"runAsUser": spec.user.uid, "runAsGroup": spec.user.gid}
    if runs_as_non_root(spec, image_user):
        context["runAsNonRoot"] = True
    return context


def check_host_paths(spec: EnvironmentSpec, allowed: Sequence[str] | None) -> None:
    """Refuse a directory mount outside the cluster's allowed host roots. ``allowed`` None means the
    cluster states none (the config layer's ``allowed_host_paths`` check at apply time is the
    first line; this is the runtime's own, for revisions stored before it)."""
    if allowed is None:
        return
    roots = [normalized(r) for r in allowed]
    for i, d in enumerate(spec.dirs):
        path = normalized(d.host_path)
        if not under_any(path, roots):
            raise PermanentError(
                f"dirs[{i}].host_path {d.host_path} is not under the cluster's allowed host paths ({', '.join(roots) or 'none'})",
                hint="mount a directory under one of them, or ask the cluster's administrator to add a root to allowed_host_paths")


def _probe(check: HealthCheck, *, initial_delay: int, success: int) -> dict[str, Any]:
    probe: dict[str, Any] = {
        "initialDelaySeconds": initial_delay, "periodSeconds": _seconds(check.period_s, 1),
        "timeoutSeconds": _seconds(check.timeout_s, 1), "successThreshold": success,
        "failureThreshold": check.failure_threshold,
    }
    if check.http is not None:
        probe["httpGet"] = {"path": check.http.path, "port": check.http.port, "scheme": "HTTP"}
    else:
        assert check.exec is not None
        probe["exec"] = {"command": list(check.exec.command)}
    return probe


def probes(check: HealthCheck | None) -> dict[str, Any]:
    """Readiness is the health check as written. Liveness is the same check, starting only after the
    check's budget: a never-ready instance is FAILED (cairn's verdict) rather than restarted in a
    loop, while one that was ready and then fails its check is restarted, as on the local runtime."""
    if check is None:
        return {}
    delay = _seconds(check.initial_delay_s)
    return {
        "readinessProbe": _probe(check, initial_delay=delay, success=check.success_threshold),
        "livenessProbe": _probe(check, initial_delay=delay + _seconds(check.budget_s, 1), success=1),
    }


def _post_start(command: list[str]) -> dict[str, Any]:
    # The kubelet keeps a failed hook's output out of events (it may hold secrets). The wrapper
    # writes it to the termination log instead, which becomes the killed container's message: the
    # reason a person reads. The cost: PostStart needs a `sh` in the image.
    script = ('out=$("$@" 2>&1); code=$?; [ "$code" -eq 0 ] && exit 0; '
              f'printf "%s: exec [%s] exited %s: %s" "{POST_START_FAILED}" "$*" "$code" "$out" '
              '| tail -c 2000 > /dev/termination-log; exit "$code"')
    return {"exec": {"command": ["sh", "-c", script, "cairn-post-start", *command]}}


def log_dirs(spec: EnvironmentSpec) -> list[str]:
    """Directories holding the collected log files, in first-seen order."""
    out: list[str] = []
    for pattern in spec.logs.files:
        directory = posixpath.dirname(pattern) or "/"
        if directory not in out:
            out.append(directory)
    return out


def _glob_word(pattern: str) -> str:
    """``pattern`` as one shell word that still globs: quote everything but ``*`` and ``?``."""
    return "".join(part if part in ("*", "?") else shlex.quote(part) for part in re.split(r"([*?])", pattern) if part)


def _log_sidecar(spec: EnvironmentSpec, image: str, app_mounts: list[dict[str, Any]],
                 volumes: list[dict[str, Any]], security: dict[str, Any]) -> dict[str, Any]:
    """A container that follows the configured log files and prints each line prefixed with its
    path, so the kubelet keeps (and rotates) them with the container logs."""
    mounts: list[dict[str, Any]] = []
    for i, directory in enumerate(log_dirs(spec)):
        covering = [m for m in app_mounts if "subPath" not in m and under_any(directory, [m["mountPath"]])]
        if covering:
            mount = max(covering, key=lambda m: len(m["mountPath"]))
            if mount not in mounts:
                mounts.append({"name": mount["name"], "mountPath": mount["mountPath"]})
            continue
        volumes.append({"name": f"logs-{i}", "emptyDir": {}})
        app_mounts.append({"name": f"logs-{i}", "mountPath": directory})
        mounts.append({"name": f"logs-{i}", "mountPath": directory})
    patterns = " ".join(_glob_word(p) for p in spec.logs.files)
    script = (
        "trap 'exit 0' TERM; seen=' '; while :; do for f in " + patterns + "; do "
        '[ -f "$f" ] || continue; case "$seen" in *" $f "*) continue;; esac; seen="$seen$f "; '
        '(tail -F -n +1 "$f" 2>/dev/null | while IFS= read -r l; do echo "$f $l"; done) & '
        "done; sleep 1 & wait $!; done"
    )
    return {"name": LOGS, "image": image, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script],
            "securityContext": security, "volumeMounts": mounts, "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                                   "limits": {"cpu": "10m", "memory": "16Mi"}}}


def pod(revision: Revision, slot: int, namespace: str, *, order: str | None = None,
        defaults: Mapping[str, Any] | None = None, image_user: str | None = None,
        allowed_host_paths: Sequence[str] | None = None) -> dict[str, Any]:
    """The pod of ``slot`` running ``revision``. ``defaults`` (nodeSelector, tolerations) come from
    the cluster's ``cairn-pod-defaults`` ConfigMap: where pods may run is the cluster's business.
    ``image_user`` is the image config's ``User`` when known; ``allowed_host_paths`` the cluster's
    host roots (:func:`check_host_paths`)."""
    spec = revision.spec
    check_host_paths(spec, allowed_host_paths)
    non_root = runs_as_non_root(spec, image_user)
    name = pod_name(revision, slot)
    labels = {**_revision_labels(revision), SLOT: str(slot), VERSION: label_value(revision.version), SERVING: "true"}
    annotations = {DIGEST: revision.digest, VERSION: revision.version, IMAGE: revision.image}
    if spec.health_check is not None:
        annotations[HEALTH_BUDGET] = f"{spec.health_check.budget_s:g}"
    if order:
        labels[ORDER] = label_value(order)
        annotations[ORDER] = order
    resources = {"cpu": f"{max(1, round(spec.cpu * 1000))}m", "memory": f"{spec.memory_mb}Mi"}
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env.items()]
    env += [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret_name(revision), "key": var}}} for var in spec.secret_env]
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    init: list[dict[str, Any]] = []
    container: dict[str, Any] = {
        "name": CONTAINER, "image": revision.image, "imagePullPolicy": "IfNotPresent", "env": env,
        "resources": {"requests": resources, "limits": resources},
        "ports": [{"containerPort": p.container_port, "protocol": "TCP", **({"name": p.name} if p.name else {})} for p in spec.ports],
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {**container_security(non_root), "readOnlyRootFilesystem": spec.read_only_root},
        **probes(spec.health_check),
    }
    if spec.command:
        container["command"] = list(spec.command)
    if revision.deploy_type == "code-package" and spec.deploy_root and revision.package_digest:
        root = spec.deploy_root
        container["workingDir"] = root
        volumes += [{"name": "code", "emptyDir": {}},
                    {"name": "package", "configMap": {"name": package_name(revision)}}]
        mounts.append({"name": "code", "mountPath": root})
        unpack = (f"echo '{revision.package_digest}  /cairn/package/{PACKAGE_KEY}' | sha256sum -c - >/dev/null "
                  f"|| {{ echo 'code package {revision.package_digest[:12]} does not match its digest' >&2; exit 1; }}; "
                  f"tar -xzf /cairn/package/{PACKAGE_KEY} -C {shlex.quote(root)}")
        init.append({"name": UNPACK, "image": revision.image, "imagePullPolicy": "IfNotPresent",
                     "command": ["sh", "-c", unpack], "resources": {"requests": resources, "limits": resources},
                     "terminationMessagePolicy": "FallbackToLogsOnError", "securityContext": container_security(non_root),
                     "volumeMounts": [{"name": "code", "mountPath": root},
                                      {"name": "package", "mountPath": "/cairn/package", "readOnly": True}]})
    if spec.files:
        volumes.append({"name": "files", "configMap": {"name": files_name(revision)}})
        mounts += [{"name": "files", "mountPath": f.path, "subPath": f"file-{i}", "readOnly": True} for i, f in enumerate(spec.files)]
    for i, d in enumerate(spec.dirs):
        # Directory: the kubelet mounts what the node has and never creates an arbitrary path as root.
        volumes.append({"name": f"dir-{i}", "hostPath": {"path": d.host_path, "type": "Directory"}})
        mounts.append({"name": f"dir-{i}", "mountPath": d.path})
    if spec.read_only_root and not any(mount["mountPath"] == TMP for mount in mounts):
        volumes.append({"name": "tmp", "emptyDir": {}})
        mounts.append({"name": "tmp", "mountPath": TMP})
    lifecycle: dict[str, Any] = {}
    if spec.lifecycle.post_start is not None:
        lifecycle["postStart"] = _post_start(list(spec.lifecycle.post_start.exec.command))
    if spec.lifecycle.pre_stop is not None:
        lifecycle["preStop"] = {"exec": {"command": list(spec.lifecycle.pre_stop.exec.command)}}
    if lifecycle:
        container["lifecycle"] = lifecycle
    containers = [container]
    if spec.logs.files:
        containers.append(_log_sidecar(spec, revision.image, mounts, volumes, container_security(non_root)))
    container["volumeMounts"] = mounts
    # No host namespace, no process namespace shared between the app and its log sidecar, no
    # service account token: an instance reaches neither the node nor the cluster's API.
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Always", "enableServiceLinks": False, "automountServiceAccountToken": False,
        "hostNetwork": False, "hostPID": False, "hostIPC": False, "shareProcessNamespace": False,
        "securityContext": pod_security(spec, image_user),
        "terminationGracePeriodSeconds": _seconds(spec.lifecycle.termination_grace_period_s),
        "containers": containers, "volumes": volumes,
    }
    if spec.image_pull_secret:
        pod_spec["imagePullSecrets"] = [{"name": pull_secret_name(revision)}]
    if init:
        pod_spec["initContainers"] = init
    for key in ("nodeSelector", "tolerations", "affinity", "priorityClassName", "runtimeClassName"):
        if defaults and defaults.get(key):
            pod_spec[key] = defaults[key]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, namespace, labels, annotations), "spec": pod_spec}
