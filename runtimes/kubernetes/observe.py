"""Pure reading of pods and Kubernetes events into cairn's Instance, Phase and Event.

Pods and events arrive as the API's JSON (dicts), so every rule here is unit-tested without a
cluster (tests/unit/test_k8s_observe.py).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cairn.redaction import redact_tail
from cairn.runtime import Event, Instance, Phase
from cairn.runtimes.kubernetes import manifests as m

IMAGE_ERRORS = {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ImageInspectError"}
CONFIG_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
# A config error that is the kubelet's own lag, not the configuration's: its watch of a Secret or
# ConfigMap cairn has just written has not synced yet ("failed to sync secret cache: timed out
# waiting for the condition", seen under load). The kubelet retries it; the health budget still
# bounds the wait.
_KUBELET_LAG = re.compile(r"failed to sync (secret|configmap) cache")
REASONS = {"FailedPostStartHook": "PostStartFailed", "FailedPreStopHook": "FailedPreStop"}
# Lazy: a revision of 12 decimal digits must still read as the revision, not as the slot.
_INSTANCE = re.compile(r"^(?P<instance>.+?-(?P<slot>\d+))(?:-[0-9a-f]{12})?$")


def uses_secrets(pod: dict[str, Any]) -> bool:
    """Whether ``pod`` was given secret values (secret_env, a registry login): text about it may hold them."""
    spec = pod.get("spec", {})
    return bool(spec.get("imagePullSecrets")) or any("secretKeyRef" in (e.get("valueFrom") or {})
                                                     for c in spec.get("containers", []) for e in c.get("env") or [])


def says_something(pod: dict[str, Any]) -> bool:
    """Whether the pod's status holds a message (the kubelet's, or a container's termination message)."""
    return bool(_messages(pod.get("status") or {}))


def _messages(node: Any) -> list[tuple[dict[str, Any], str]]:
    """Every (holder, key) of a message in a pod's status: waiting, terminated and condition messages."""
    found: list[tuple[dict[str, Any], str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "message" and isinstance(value, str) and value:
                found.append((node, key))
            else:
                found += _messages(value)
    elif isinstance(node, list):
        for value in node:
            found += _messages(value)
    return found


def redacted(pod: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """``pod`` with the secret values masked in its status's messages, before anything reads or cuts
    them. A termination message is the end of the container's output (the kubelet keeps its last
    2 KiB, PostStart's wrapper the last 2000 bytes), so it may begin inside a secret."""
    if not secrets:
        return pod
    out = copy.deepcopy(pod)
    for holder, key in _messages(out.get("status") or {}):
        holder[key] = redact_tail(holder[key], secrets)
    return out


def parse_time(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in pod.get("status", {}).get("conditions") or [] if c.get("type") == kind), None)


def _container(statuses: list[dict[str, Any]] | None, name: str) -> dict[str, Any] | None:
    return next((c for c in statuses or [] if c.get("name") == name), None)


def _limit(pod: dict[str, Any]) -> str:
    for c in pod.get("spec", {}).get("containers", []):
        if c.get("name") == m.CONTAINER:
            memory = c.get("resources", {}).get("limits", {}).get("memory", "?")
            return memory.replace("Mi", " MB")
    return "?"


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def termination_reason(pod: dict[str, Any], terminated: dict[str, Any]) -> str:
    """Why a container ended, in the local runtime's words."""
    code = terminated.get("exitCode")
    message = terminated.get("message") or ""
    if terminated.get("reason") == "OOMKilled":
        return f"OOMKilled: used more than its memory limit of {_limit(pod)} (exit {code})"
    if message.startswith(m.POST_START_FAILED):
        return message.strip()
    said = _last_line(message)
    base = f"Error: exited with code {code}" if code else "Completed: exited with code 0"
    return f"{base} ({said})" if said and code else base


@dataclass(frozen=True)
class Verdict:
    phase: Phase
    reason: str | None = None
    quote_probe: bool = False
    """The reason should quote what the health check got (the caller knows how to ask)."""
    sticky: bool = False
    """A FAILED verdict to record on the pod, so a later restart does not hide it."""


def classify(pod: dict[str, Any], now: float) -> Verdict:
    meta, status = pod["metadata"], pod.get("status", {})
    annotations = meta.get("annotations") or {}
    if meta.get("deletionTimestamp"):
        return Verdict(Phase.TERMINATING, "being stopped")
    if annotations.get(m.FAILED):
        return Verdict(Phase.FAILED, annotations[m.FAILED])
    scheduled = _condition(pod, "PodScheduled")
    if scheduled and scheduled.get("status") == "False":
        return Verdict(Phase.PENDING, f"Unschedulable: {scheduled.get('message') or scheduled.get('reason')}")
    for init in status.get("initContainerStatuses") or []:
        state, last = init.get("state", {}), init.get("lastState", {})
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in IMAGE_ERRORS:
            return Verdict(Phase.FAILED, _image_reason(pod, waiting))
        failed = state.get("terminated") if (state.get("terminated") or {}).get("exitCode") else last.get("terminated")
        if failed and failed.get("exitCode"):
            said = _last_line(failed.get("message")) or f"exit {failed['exitCode']}"
            return Verdict(Phase.FAILED, f"could not unpack the code package: {said}")
        if not (state.get("terminated") or {}).get("exitCode") == 0:
            return Verdict(Phase.PENDING, "unpacking the code package")
    app = _container(status.get("containerStatuses"), m.CONTAINER)
    if app is None:
        return Verdict(Phase.PENDING, status.get("reason") or "created, not started yet")
    state, last = app.get("state", {}), (app.get("lastState") or {}).get("terminated")
    if "waiting" in state:
        waiting = state["waiting"] or {}
        reason = waiting.get("reason")
        if reason in IMAGE_ERRORS:
            return Verdict(Phase.FAILED, _image_reason(pod, waiting))
        if reason in CONFIG_ERRORS and _KUBELET_LAG.search(waiting.get("message") or ""):
            return Verdict(Phase.PENDING, f"{reason}: {waiting['message']}")
        if reason in CONFIG_ERRORS:
            return Verdict(Phase.FAILED, f"{reason}: {waiting.get('message', '')}".strip())
        if reason == "CrashLoopBackOff" or last:
            return Verdict(Phase.BACKOFF, termination_reason(pod, last) if last else reason)
        return Verdict(Phase.PENDING, reason or "starting")
    if "terminated" in state:
        return Verdict(Phase.BACKOFF, termination_reason(pod, state["terminated"]))
    ready = _condition(pod, "Ready")
    if app.get("ready") and ready and ready.get("status") == "True":
        return Verdict(Phase.RUNNING)
    if app.get("started") is False and _has_post_start(pod):
        # The kubelet probes only once PostStart has ended (``started`` turns true then): the
        # health check's budget is not running out while the hook runs.
        return Verdict(Phase.STARTING, "PostStart hook running")
    started = parse_time((state.get("running") or {}).get("startedAt")) or now
    budget = annotations.get(m.HEALTH_BUDGET)
    # The Ready condition keeps the time of its last change: still False since before this
    # container started means it never passed; a later change means it passed and then failed.
    changed = parse_time((ready or {}).get("lastTransitionTime")) or 0.0
    if ready and ready.get("status") != "True" and changed > started + 1 and budget:
        return Verdict(Phase.UNHEALTHY, "was ready, now failing its health check", quote_probe=True)
    if budget and now - started > float(budget):
        return Verdict(Phase.FAILED, f"health check never passed within {float(budget):g}s", quote_probe=True, sticky=True)
    if budget:
        return Verdict(Phase.STARTING, "health check not passed yet", quote_probe=True)
    return Verdict(Phase.STARTING, "PostStart hook running" if _has_post_start(pod) else "starting")


def _has_post_start(pod: dict[str, Any]) -> bool:
    return any("postStart" in (c.get("lifecycle") or {}) for c in pod.get("spec", {}).get("containers", []))


def _image_reason(pod: dict[str, Any], waiting: dict[str, Any]) -> str:
    image = (pod["metadata"].get("annotations") or {}).get(m.IMAGE) or "the image"
    return f"image {image} is not present on the node and cannot be pulled ({waiting.get('reason')}: {waiting.get('message', '')})".strip()


def instance(pod: dict[str, Any], verdict: Verdict) -> Instance:
    meta, status = pod["metadata"], pod.get("status", {})
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    app = _container(status.get("containerStatuses"), m.CONTAINER) or {}
    state = app.get("state") or {}
    terminated = state.get("terminated") or (app.get("lastState") or {}).get("terminated") or {}
    ports = {p["containerPort"]: p["containerPort"]
             for c in pod["spec"]["containers"] if c["name"] == m.CONTAINER for p in c.get("ports") or []}
    slot = int(labels.get(m.SLOT, _slot(meta["name"])))
    return Instance(
        name=instance_of(meta["name"]), slot=slot,
        revision=annotations.get(m.DIGEST, ""), phase=verdict.phase,
        ready=verdict.phase is Phase.RUNNING, address=status.get("podIP") or None, ports=ports,
        restarts=int(app.get("restartCount") or 0), started_at=parse_time((state.get("running") or {}).get("startedAt")),
        reason=verdict.reason, exit_code=terminated.get("exitCode"),
    )


def _slot(name: str) -> int:
    match = _INSTANCE.match(name)
    return int(match.group("slot")) if match else -1


def instance_of(pod_name: str) -> str:
    """The instance a pod (``{app}-{env}-{slot}-{revision}``) serves: ``{app}-{env}-{slot}``.

    >>> instance_of("shop-api-production-3-0123456789ab")
    'shop-api-production-3'
    >>> instance_of("shop-api-production-3")
    'shop-api-production-3'
    >>> instance_of("web-2-test-3-012345678901")
    'web-2-test-3'
    """
    match = _INSTANCE.match(pod_name)
    return match.group("instance") if match else pod_name


def current(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One pod per slot: the one not being deleted and not leaving the Service (a replacement
    starts while its predecessor drains and stops, and the slot is the replacement's), else the
    newest of the others."""

    def rank(pod: dict[str, Any]) -> tuple[bool, bool, str]:
        meta = pod["metadata"]
        leaving = (meta.get("labels") or {}).get(m.SERVING) == "false"
        return not meta.get("deletionTimestamp"), not leaving, meta.get("creationTimestamp") or ""

    best: dict[str, dict[str, Any]] = {}
    for pod in pods:
        slot = (pod["metadata"].get("labels") or {}).get(m.SLOT, pod["metadata"]["name"])
        if slot not in best or rank(pod) > rank(best[slot]):
            best[slot] = pod
    return list(best.values())


# --- events -------------------------------------------------------------------------------------
def event_time(ev: dict[str, Any]) -> float:
    series = (ev.get("series") or {}).get("lastObservedTime")
    for key in (series, ev.get("lastTimestamp"), ev.get("eventTime"), ev.get("firstTimestamp"),
                ev.get("metadata", {}).get("creationTimestamp")):
        if key:
            return parse_time(key) or 0.0
    return 0.0


def sort_key(ev: dict[str, Any]) -> tuple[int, int]:
    # The kubelet stamps whole seconds, the scheduler microseconds: compare seconds, then the
    # order the API server stored them in.
    rv = ev.get("metadata", {}).get("resourceVersion") or "0"
    return int(event_time(ev)), int(rv) if rv.isdigit() else 0


def to_event(ev: dict[str, Any], pods: dict[str, dict[str, Any]]) -> Event:
    reason = ev.get("reason") or ""
    message = (ev.get("message") or "").strip()
    name = ev["involvedObject"]["name"]
    if reason == "FailedPostStartHook":
        said = _post_start_message(pods.get(name))
        message = said or message
    count = (ev.get("series") or {}).get("count") or ev.get("count") or 1
    if count > 1:
        message = f"{message} (x{count})"
    return Event(time=event_time(ev), instance=name, reason=REASONS.get(reason, reason), message=message,
                 type=ev.get("type") or "Normal")


def _post_start_message(pod: dict[str, Any] | None) -> str | None:
    app = _container((pod or {}).get("status", {}).get("containerStatuses"), m.CONTAINER) or {}
    for term in ((app.get("state") or {}).get("terminated"), (app.get("lastState") or {}).get("terminated")):
        if term and (term.get("message") or "").startswith(m.POST_START_FAILED):
            return str(term["message"]).strip()
    return None


def status_events(pod: dict[str, Any]) -> list[Event]:
    """Events Kubernetes keeps only in the pod's status: an OOM kill, the code package unpacked."""
    name, out = pod["metadata"]["name"], []
    status = pod.get("status", {})
    unpack = _container(status.get("initContainerStatuses"), m.UNPACK)
    done = ((unpack or {}).get("state") or {}).get("terminated") or {}
    if done.get("exitCode") == 0:
        digest = next((c.get("command", [""])[-1] for c in pod["spec"].get("initContainers", [])), "")
        root = next((v["mountPath"] for c in pod["spec"].get("initContainers", []) for v in c.get("volumeMounts", [])
                     if v["name"] == "code"), "the deploy root")
        what = re.search(r"code package ([0-9a-f]{12})", digest)
        out.append(Event(time=parse_time(done.get("finishedAt")) or 0.0, instance=name, reason="Unpacked",
                         message=f"Unpacked code package {what.group(1) if what else ''} into {root}".replace("  ", " ")))
    app = _container(status.get("containerStatuses"), m.CONTAINER) or {}
    for term in ((app.get("state") or {}).get("terminated"), (app.get("lastState") or {}).get("terminated")):
        if term and term.get("reason") == "OOMKilled":
            out.append(Event(time=parse_time(term.get("finishedAt")) or 0.0, instance=name, reason="OOMKilled",
                             message=termination_reason(pod, term), type="Warning"))
    return out
