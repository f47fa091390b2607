"""A thin, JSON-speaking wrapper of the official client: one namespace, server-side apply,
Event objects cairn writes itself. Every call goes through ``errors.edge``."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

import orjson
import yaml

from cairn.errors import PermanentError, TemporaryError
from cairn.redaction import redact
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes.errors import edge

if TYPE_CHECKING:
    from urllib3 import HTTPResponse

FIELD_MANAGER = "cairn"
APPLY = "application/apply-patch+yaml"
TIMEOUT_S = 30
POD_DEFAULTS = "cairn-pod-defaults"
WORKERS = 16  # parallel API calls for one batch's pods
WATCH_TICK_S = 1.0  # a quiet watch is renewed this often, so a follower sees its deadline and can look around


class Expired(TemporaryError):
    """The resourceVersion a watch started from is too old (410 Gone): list again."""

    def __init__(self) -> None:
        # CairnError needs a message: a bare ``Expired()`` was a TypeError, which no ``except
        # Expired`` caught (the pod cache gave up; a health wait's own watch failed the batch).
        super().__init__("the watch's resourceVersion is too old (410 Gone)", hint="list again, then watch from there")


def pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(WORKERS, n)))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def client_for(kubeconfig: str | None, context: str | None) -> Any:
    """An ApiClient from kubeconfig *content* (or, without it, in-cluster or ~/.kube/config)."""
    from kubernetes import client, config

    cfg = client.Configuration()
    if kubeconfig:
        _MASKING.values.update(_values(kubeconfig))
        if _MASKING not in logging.getLogger().filters:
            logging.getLogger().addFilter(_MASKING)
    try:
        if kubeconfig:
            data = yaml.safe_load(kubeconfig)
            if not isinstance(data, dict):
                raise ValueError("not a kubeconfig document")
            config.load_kube_config_from_dict(data, context=context, client_configuration=cfg, persist_config=False)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(context=context, client_configuration=cfg, persist_config=False)
    except Exception as exc:  # noqa: BLE001 - a bad kubeconfig is the user's to fix, whatever the client says
        raise PermanentError(f"cannot use the kubeconfig{f' (context {context})' if context else ''}: {_unquoted(exc, kubeconfig)}",
                             hint="check the cluster's kubeconfig_secret holds a kubeconfig with that context") from None
    cfg.connection_pool_maxsize = 32  # batches create pods in parallel
    cfg.retries = 1  # an unreachable API becomes a TemporaryError quickly; the flow retries
    return client.ApiClient(cfg)


_GRAMMAR = re.compile(r"'(<[a-z ]+>|[][{},:?-])'")


class _Masking(logging.Filter):
    """The client logs what an exec credential plugin printed on its stderr (``logging.error`` on
    the root logger), at load and at each token refresh: the values of every kubeconfig this
    process loaded are masked in the root logger's records."""

    def __init__(self) -> None:
        super().__init__()
        self.values: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.values:
            record.msg, record.args = redact(record.getMessage(), self.values), None
        return True


_MASKING = _Masking()


def _unquoted(exc: Exception, kubeconfig: str | None) -> str:
    """What was wrong with a kubeconfig, without its content: the kubeconfig is a secret (tokens,
    client keys), and YAML's errors quote the offending line with a caret under it."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        # A problem may quote what it found ("found character '@' ..."): a piece of the content.
        # What it expected (',' or '}', '<stream end>') is the grammar's and stays.
        problem = re.sub(r"'[^']*'", lambda q: q[0] if _GRAMMAR.fullmatch(q[0]) else "'…'", exc.problem or "a syntax error")
        return f"it is not valid YAML{where}: {problem}"
    if isinstance(exc, yaml.YAMLError):
        return "it is not valid YAML"
    # The client's own messages name keys and objects, yet some quote what a credential plugin said.
    return redact(f"{type(exc).__name__}: {exc}", _values(kubeconfig))


# Where a kubeconfig keeps credentials: a user's token, password and key, a CA, an exec plugin's
# environment (``env: [{name, value}]``) and an auth provider's configuration.
_CREDENTIALS = {"token", "password", "client-key-data", "client-certificate-data", "certificate-authority-data", "value"}


def _values(kubeconfig: str | None) -> list[str]:
    """The credentials a kubeconfig holds (none when it is not YAML: nothing of it is then shown)."""
    try:
        data = yaml.safe_load(kubeconfig or "")
    except yaml.YAMLError:
        return []
    found: list[str] = []

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, secret or k in _CREDENTIALS or k == "auth-provider")
        elif isinstance(node, list):
            for v in node:
                walk(v, secret)
        elif secret and isinstance(node, str):
            found.append(node)

    walk(data, False)
    return found


def decoded(secret: Mapping[str, Any]) -> list[str]:
    """The values a Secret holds, as they would appear in text: each key's value, and for a
    registry login (dockerconfigjson) the password and the encoded login, not the JSON around them."""
    import base64

    values = [base64.b64decode(v).decode(errors="replace") for v in (secret.get("data") or {}).values()]
    if secret.get("type") != "kubernetes.io/dockerconfigjson":
        return values
    out = []
    for value in values:
        try:
            auths = json.loads(value).get("auths") or {}
        except (ValueError, AttributeError):
            out.append(value)
            continue
        for entry in auths.values():
            auth = str((entry or {}).get("auth") or "")
            try:
                login = base64.b64decode(auth).decode(errors="replace")
            except ValueError:
                login = ""
            out += [auth, login, login.partition(":")[2], str((entry or {}).get("password") or "")]
    return [v for v in out if v]


def preload() -> None:
    """Import what a runtime's first call needs, for a process that forks runs (deployments/warmstart.py)."""
    from kubernetes import client, config, watch  # noqa: F401
    from kubernetes.client.exceptions import ApiException  # noqa: F401

    client.ApiClient, client.Configuration, client.CoreV1Api, client.DiscoveryV1Api  # noqa: B018 - resolved lazily


_CLIENTS: dict[tuple[str, str | None], Any] = {}
_READY_NAMESPACES: set[tuple[str, str | None, str]] = set()
_LOCK = threading.Lock()


def _key(kubeconfig: str | None) -> str:
    return hashlib.sha256((kubeconfig or "").encode()).hexdigest()


class Api:
    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str) -> None:
        from kubernetes import client

        self.namespace = namespace
        # Flows build a runtime per task: one client (its TLS setup, its connection pool) per
        # kubeconfig and context per process keeps a batch from paying for it again.
        key = (_key(kubeconfig), context)
        with _LOCK:
            if key not in _CLIENTS:
                _CLIENTS[key] = client_for(kubeconfig, context)
        self.client = _CLIENTS[key]
        self.core = client.CoreV1Api(self.client)
        self._ns_key = (*key, namespace)
        self._reporter = socket.gethostname()

    # --- reads ----------------------------------------------------------------------------
    def _json(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        response = call(*args, _preload_content=False, _request_timeout=TIMEOUT_S, **kwargs)
        return orjson.loads(response.data)

    def _send(self, call: Any, *args: Any, **kwargs: Any) -> bytes:
        """A write whose answer cairn reads little of: the body is drained (the connection goes back
        to the pool) but not turned into the client's model objects, which costs more CPU than
        the request itself when a batch writes 30 pods at once."""
        return bytes(call(*args, _preload_content=False, _request_timeout=TIMEOUT_S, **kwargs).data)

    def pods(self, app: str, environment: str, *, slots: list[int] | None = None) -> list[dict[str, Any]]:
        """The environment's pods (only ``slots``'), sorted by slot."""
        return self._pods(app, environment, slots)[0]

    def _pods(self, app: str, environment: str, slots: list[int] | None) -> tuple[list[dict[str, Any]], str]:
        """The pods, sorted by slot, and the list's resourceVersion (where a watch of them starts)."""
        selector = _pod_selector(app, environment, slots)
        with edge(f"listing pods of {app}/{environment}"):
            listed = self._json(self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        items = sorted(listed["items"], key=lambda p: int(p["metadata"]["labels"].get(m.SLOT, "0")))
        return items, listed["metadata"]["resourceVersion"]

    def any_pod_stopping(self) -> bool:
        """Whether any of cairn's pods in the namespace is being deleted: its node's resources are
        about to be free."""
        with edge("listing stopping pods"):
            listed = self._json(self.core.list_namespaced_pod, self.namespace, label_selector=m.APP)
        return any(p["metadata"].get("deletionTimestamp") for p in listed["items"])

    def follow_pods(self, app: str, environment: str, *, slots: list[int] | None, until: float) -> Iterator[list[dict[str, Any]]]:
        """The pods (as ``pods`` returns them) now, then again after every change, and at least every
        ``WATCH_TICK_S`` until the monotonic deadline ``until``: one list, then a watch from its
        resourceVersion. Waiting on pods this way costs the API server and this process nothing
        while nothing changes, where polling re-reads every pod many times a second."""
        listed, version = self._pods(app, environment, slots)
        seen = {p["metadata"]["uid"]: p for p in listed}
        yield listed
        while time.monotonic() < until:
            try:
                for kind, pod in self._watch_pods(app, environment, slots, version, min(WATCH_TICK_S, until - time.monotonic())):
                    version = pod["metadata"]["resourceVersion"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "DELETED":
                        seen.pop(pod["metadata"]["uid"], None)
                    else:
                        seen[pod["metadata"]["uid"]] = pod
                    yield sorted(seen.values(), key=lambda p: int(p["metadata"]["labels"].get(m.SLOT, "0")))
                    if time.monotonic() >= until:
                        return
            except Expired:
                listed, version = self._pods(app, environment, slots)
                seen = {p["metadata"]["uid"]: p for p in listed}
            yield sorted(seen.values(), key=lambda p: int(p["metadata"]["labels"].get(m.SLOT, "0")))

    def _watch_pods(self, app: str, environment: str, slots: list[int] | None, version: str,
                    seconds: float) -> Iterator[tuple[str, dict[str, Any]]]:
        """Pod events after ``version`` for about ``seconds``: the server ends the watch after whole
        seconds; a quiet stream ends sooner, at the client's read timeout."""
        from kubernetes.watch.watch import iter_resp_lines
        from urllib3.exceptions import ReadTimeoutError

        with edge(f"watching pods of {app}/{environment}"):
            # _preload_content=False: the client's stubs say a V1PodList, the call gives the raw stream.
            response = cast("HTTPResponse", self.core.list_namespaced_pod(
                self.namespace, label_selector=_pod_selector(app, environment, slots), watch=True, resource_version=version,
                allow_watch_bookmarks=True, timeout_seconds=max(1, math.ceil(seconds)), _preload_content=False,
                _request_timeout=(TIMEOUT_S, max(0.01, seconds))))
            try:
                for line in iter_resp_lines(response):
                    if not line:
                        continue
                    event = orjson.loads(line)
                    if event["type"] == "ERROR":
                        if event["object"].get("code") == 410:
                            raise Expired()
                        raise PermanentError(f"watching pods of {app}/{environment}: {event['object'].get('message')}",
                                             hint="see the API server's message")
                    yield event["type"], event["object"]
            except ReadTimeoutError:
                return  # nothing happened for ``seconds``: the caller's tick
            finally:
                response.close()  # a watch cut short cannot go back to the pool half read

    def events(self, *, name: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
        selector = ["involvedObject.kind=Pod"] + ([f"involvedObject.name={name}"] if name else [])
        selector += [f"reason={reason}"] if reason else []
        with edge("listing events"):
            return list(self._json(self.core.list_namespaced_event, self.namespace, field_selector=",".join(selector))["items"])

    def service(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        with edge(f"reading service {name}"):
            try:
                return dict(self._json(self.core.read_namespaced_service, name, self.namespace))
            except ApiException as exc:
                if exc.status == 404:
                    return None
                raise

    def endpoint_slices(self, service: str) -> list[dict[str, Any]]:
        """The EndpointSlices the cluster keeps for ``service`` (discovery.k8s.io/v1)."""
        from kubernetes import client

        with edge(f"listing the endpoints of service {service}"):
            return list(self._json(client.DiscoveryV1Api(self.client).list_namespaced_endpoint_slice, self.namespace,
                                   label_selector=f"kubernetes.io/service-name={service}")["items"])

    def secret_values(self, app: str, environment: str) -> list[str]:
        """The values of every Secret cairn keeps for the environment (each revision's secret_env,
        its registry login), to redact them from text cairn shows: the kubelet writes a container's
        output into pod statuses and events as it was, and only the cluster holds the values."""
        return [v for s in self.listed("Secret", app, environment) for v in decoded(s)]

    def pod_defaults(self) -> dict[str, Any]:
        """nodeSelector, tolerations... every pod of this namespace gets (ConfigMap cairn-pod-defaults)."""
        from kubernetes.client.exceptions import ApiException

        with edge("reading the namespace's pod defaults"):
            try:
                data = self._json(self.core.read_namespaced_config_map, POD_DEFAULTS, self.namespace).get("data") or {}
            except ApiException as exc:
                if exc.status == 404:
                    return {}
                raise
        try:
            return {key: json.loads(value) for key, value in data.items()}
        except ValueError:
            raise PermanentError(f"ConfigMap {self.namespace}/{POD_DEFAULTS} holds a value that is not JSON",
                                 hint='each key (nodeSelector, tolerations, ...) is JSON, e.g. nodeSelector: {"type": "kwok"}') from None

    # --- writes ---------------------------------------------------------------------------
    def ensure_namespace(self) -> None:
        if self._ns_key in _READY_NAMESPACES:
            return
        from kubernetes.client import V1Namespace, V1ObjectMeta
        from kubernetes.client.exceptions import ApiException

        with edge(f"creating namespace {self.namespace}"):
            try:
                self.core.read_namespace(self.namespace, _request_timeout=TIMEOUT_S)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                try:
                    self.core.create_namespace(V1Namespace(metadata=V1ObjectMeta(name=self.namespace, labels=dict(m.MANAGED))),
                                               _request_timeout=TIMEOUT_S)
                except ApiException as again:
                    if again.status != 409:
                        raise
        _READY_NAMESPACES.add(self._ns_key)

    def apply(self, obj: Mapping[str, Any]) -> str:
        """Server-side apply (field manager ``cairn``): creates or converges, idempotently. Returns the object's uid."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        call = {"Pod": self.core.patch_namespaced_pod, "Secret": self.core.patch_namespaced_secret,
                "ConfigMap": self.core.patch_namespaced_config_map, "Service": self.core.patch_namespaced_service}[kind]
        with edge(f"applying {kind} {name}"):
            answer = self._send(call, name, self.namespace, dict(obj), field_manager=FIELD_MANAGER, force=True, _content_type=APPLY)
        return str(orjson.loads(answer)["metadata"]["uid"])

    def create_pod(self, pod: Mapping[str, Any]) -> str:
        """A new pod: created (the API server does less work than for an apply, which must work out
        each field's owner: 60 pods a batch go ~40% faster), or applied if its name exists already,
        which keeps this idempotent. Returns the pod's uid."""
        from kubernetes.client.exceptions import ApiException

        with edge(f"creating Pod {pod['metadata']['name']}"):
            try:
                answer = self._send(self.core.create_namespaced_pod, self.namespace, dict(pod), field_manager=FIELD_MANAGER)
                return str(orjson.loads(answer)["metadata"]["uid"])
            except ApiException as exc:
                if exc.status != 409:
                    raise
        return self.apply(pod)

    def admit_dry_run(self, pod: Mapping[str, Any]) -> None:
        """Put ``pod`` through the API server's admission (Pod Security, quotas, webhooks) without
        storing it, so a refused pod fails ``ensure`` before anything is written or any old pod
        leaves its Service. A name that exists already (a retry) is admission's to judge later."""
        from kubernetes.client.exceptions import ApiException

        with edge(f"admitting Pod {pod['metadata']['name']}"):
            try:
                self._send(self.core.create_namespaced_pod, self.namespace, dict(pod), field_manager=FIELD_MANAGER, dry_run="All")
            except ApiException as exc:
                if exc.status != 409:
                    raise

    def annotate(self, name: str, annotations: Mapping[str, str]) -> None:
        with edge(f"annotating pod {name}"):
            self._send(self.core.patch_namespaced_pod, name, self.namespace, {"metadata": {"annotations": dict(annotations)}})

    def label(self, name: str, labels: Mapping[str, str]) -> None:
        """Set labels on a pod; a pod already gone is fine (nothing selects it any more)."""
        from kubernetes.client.exceptions import ApiException

        with edge(f"labelling pod {name}"):
            try:
                self._send(self.core.patch_namespaced_pod, name, self.namespace, {"metadata": {"labels": dict(labels)}})
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def delete(self, kind: str, name: str, *, uid: str | None = None, grace_s: int | None = None) -> None:
        from kubernetes.client.exceptions import ApiException

        call = {"Pod": self.core.delete_namespaced_pod, "Secret": self.core.delete_namespaced_secret,
                "ConfigMap": self.core.delete_namespaced_config_map, "Service": self.core.delete_namespaced_service}[kind]
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}  # never the pod that replaced the one we meant
        if grace_s is not None:
            body["gracePeriodSeconds"] = grace_s
        with edge(f"deleting {kind} {name}"):
            try:
                self._send(call, name, self.namespace, body=body)
            except ApiException as exc:
                if exc.status not in (404, 409):
                    raise

    def listed(self, kind: str, app: str, environment: str) -> list[dict[str, Any]]:
        call = {"Secret": self.core.list_namespaced_secret, "ConfigMap": self.core.list_namespaced_config_map}[kind]
        with edge(f"listing {kind}s of {app}/{environment}"):
            return list(self._json(call, self.namespace, label_selector=m.env_selector(app, environment))["items"])

    def record(self, pod: Mapping[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
        """An Event about ``pod`` from cairn itself (exec sessions, stops it watched), so
        `kubectl get events` and `cairn events` tell the same story."""
        meta = pod["metadata"]
        now = _now()
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace,
                         "labels": {k: v for k, v in (meta.get("labels") or {}).items() if k in (m.APP, m.ENV, m.SLOT)}},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "namespace": self.namespace,
                               "uid": meta.get("uid")},
            "reason": reason, "message": message[:1000], "type": "Warning" if warning else "Normal",
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": "cairn", "host": self._reporter},
        }
        with edge(f"recording event {reason} on {meta['name']}"):
            self._send(self.core.create_namespaced_event, self.namespace, body)


def _pod_selector(app: str, environment: str, slots: list[int] | None) -> str:
    selector = m.env_selector(app, environment)
    if slots is not None:
        selector += f",{m.SLOT} in ({','.join(map(str, slots))})"
    return selector
