"""``KubernetesRuntime``: the Runtime protocol on a cluster, one Pod per slot under cairn's control."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cairn import packages
from cairn.config import ServiceType
from cairn.errors import NotFound, PermanentError
from cairn.redaction import redact
from cairn.revision import Revision
from cairn.runtime import EnvRef, Event, ExecResult, Instance, Phase, TrafficView
from cairn.runtimes.kubernetes import health, stream
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes.admission import ADMIT_TIMEOUT_S, admit, hint
from cairn.runtimes.kubernetes.api import Api
from cairn.runtimes.kubernetes.api import pool as _pool
from cairn.runtimes.kubernetes.drain import Traffic
from cairn.runtimes.kubernetes.errors import edge
from cairn.runtimes.kubernetes.informer import PodCaches
from cairn.runtimes.kubernetes.observe import (
    Verdict,
    classify,
    current,
    instance,
    instance_of,
    parse_time,
    redacted,
    says_something,
    sort_key,
    status_events,
    to_event,
    uses_secrets,
)
from cairn.runtimes.kubernetes.stops import Stops

DEFAULT_NAMESPACE = "cairn"
RECENT_S = 120.0  # a background clean-up spares Secrets and ConfigMaps younger than this


class KubernetesRuntime:
    """Instances as Pods named ``{app}-{env}-{slot}-{revision}`` in one namespace (default ``cairn``),
    behind one Service per environment."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None,
                 service_type: ServiceType = "ClusterIP", drain_s: float | None = None,
                 allowed_host_paths: Sequence[str] | None = None) -> None:
        self.namespace = namespace or os.environ.get("CAIRN_K8S_NAMESPACE") or DEFAULT_NAMESPACE
        # The cluster's host roots (manifests.check_host_paths); None while the cluster states none.
        self.allowed_host_paths = None if allowed_host_paths is None else list(allowed_host_paths)
        self.api = Api(kubeconfig, context, self.namespace)
        self.traffic_ = Traffic(self.api, service_type, drain_s)
        self.caches = PodCaches(self.api)
        self.stops = Stops(self.api, self.caches)

    # --- ensure -----------------------------------------------------------------------------
    def ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, *, secrets: Mapping[str, str] | None = None,
               replace_failed: bool = False, order: str | None = None, pull_login: tuple[str, str] | None = None) -> None:
        secrets = dict(secrets or {})
        if revision.spec.image_pull_secret and pull_login is None:
            raise PermanentError(f"image_pull_secret {revision.spec.image_pull_secret} given but no login passed",
                                 hint="pass the registry login (pull_login) to ensure")
        missing = sorted(set(revision.spec.secret_env) - set(secrets))
        if missing:
            raise PermanentError(f"no value for secret variables {', '.join(missing)}", hint="pass every secret_env value to ensure")
        package = self._package(revision)
        self.api.ensure_namespace()
        everything = self.caches.pods(env.app, env.environment)
        wanted = {str(s) for s in slots}
        listed = [p for p in everything if p["metadata"]["labels"].get(m.SLOT) in wanted]
        chosen = {int(p["metadata"]["labels"][m.SLOT]): p for p in current(listed)}
        have = {i.slot: i for i in self._instances(env, list(chosen.values()))}
        start: list[int] = []
        for slot in slots:
            now = have.get(slot)
            if (now is None or now.revision != revision.digest or now.phase is Phase.TERMINATING
                    or (replace_failed and now.phase is Phase.FAILED)):
                start.append(slot)
        strays = _strays(everything)
        if not start:
            if strays:
                self._delete(strays, why="left behind by a replacement that was cut short")
            return
        defaults = self.api.pod_defaults()
        new = {slot: m.pod(revision, slot, self.namespace, order=order, defaults=defaults,
                           allowed_host_paths=self.allowed_host_paths) for slot in sorted(start)}
        # Before anything is written or an old pod leaves its Service: a pod the namespace refuses
        # (Pod Security, a quota) fails here. The batch's pods differ only in name and slot.
        self.api.admit_dry_run(next(iter(new.values())))
        if revision.spec.secret_env:
            self.api.apply(m.secret(revision, self.namespace, secrets))
        if revision.spec.image_pull_secret and pull_login is not None:
            self.api.apply(m.pull_secret(revision, self.namespace, pull_login))
        if revision.spec.files:
            self.api.apply(m.files_configmap(revision, self.namespace))
        if package is not None:
            self.api.apply(m.package_configmap(revision, self.namespace, package))
        self.traffic_.publish(revision)
        # Every live pod of a slot being started goes (normally one; a terminating one is already
        # going), and so do predecessors a replacement cut short left behind.
        stopping = [p for p in listed if int(p["metadata"]["labels"][m.SLOT]) in start and not p["metadata"].get("deletionTimestamp")]
        stopping += [p for p in strays if p not in stopping]
        began = time.monotonic()
        # A name still held (a retry of the same revision, a quick return to one) is free only
        # once its pod is gone; every other new pod is created right away, beside its stopping
        # predecessor, as a Deployment's rolling update does: deletes and creates share one pool,
        # creates first, so the scheduler and kubelets start on the new pods while the old go.
        held = {p["metadata"]["name"]: p for p in listed if p["metadata"]["name"] in {n["metadata"]["name"] for n in new.values()}}
        why = f"replaced by revision {revision.short}"
        # The old pods leave the Service first; their replacements are created at once and start
        # while traffic drains away from the old ones, which are deleted after the drain.
        settle = self.traffic_.leave(stopping)

        def retire() -> None:
            settle()
            self._record_pre_stops(stopping)
            self._delete_all(stopping)

        cache = self.caches.of(env.app, env.environment)
        with _pool(len(new) + 1) as workers:
            created = [workers.submit(self.api.create_pod, p) for p in new.values() if p["metadata"]["name"] not in held]
            retiring = workers.submit(retire)
            cache.expect(created=[call.result() for call in created])
            if held:
                self.stops.wait_gone(list(held.values()), why=why, began=began)
                cache.expect(created=workers.map(self.api.create_pod, [p for p in new.values() if p["metadata"]["name"] in held]))
            # Admission is watched while the old pods drain and their deletes go out.
            following = self.caches.follow(env.app, env.environment, new, time.monotonic() + ADMIT_TIMEOUT_S)
            problems = admit(self.api, cache, following, new, revision)
            retiring.result()
        rest = [p for p in stopping if p["metadata"]["name"] not in held]
        if rest:  # ensure does not wait for them: the new pods start while they stop
            unused = any(_references(p) for p in rest)  # only a replaced pod can leave objects unused
            self.stops.follow(rest, why=why, began=began,
                              then=lambda: self._collect_garbage(env, spare_s=RECENT_S) if unused else None)
        if problems:
            self._stop([p for p in self.api.pods(env.app, env.environment, slots=sorted(new))
                        if p["metadata"]["name"] in problems], grace_s=0)
            self._collect_garbage(env)
            # Admission reads the pods as the kubelet wrote them: the values given here are masked.
            first = redact(next(iter(problems.values())), [*secrets.values(), *(pull_login or ())])
            raise PermanentError(f"{len(problems)} instance(s) cannot start: {first}", hint=hint(first))
        if any(_references(p) for p in held.values()):
            self._collect_garbage(env)

    def _package(self, revision: Revision) -> bytes | None:
        if revision.deploy_type != "code-package" or not revision.package_digest:
            return None
        data = packages.read_verified(revision.package_digest)
        if len(data) > m.PACKAGE_LIMIT:
            raise PermanentError(
                f"code package {revision.package_digest[:12]} is {len(data) // 1024} KiB; the kubernetes runtime ships "
                f"packages up to {m.PACKAGE_LIMIT // 1024} KiB (a ConfigMap)",
                hint="ship a smaller package, or bake large dependencies into the image")
        return data

    # --- observe ----------------------------------------------------------------------------
    def observe(self, env: EnvRef) -> list[Instance]:
        return self._instances(env, current(self.caches.pods(env.app, env.environment)))

    def observe_slots(self, env: EnvRef, slots: Sequence[int], *, unless: Sequence[Instance] | None = None,
                      wait_s: float = 0.0) -> list[Instance]:
        """``observe`` narrowed to ``slots``. With ``unless`` and ``wait_s``, a long poll: the slots are
        watched (by label selector) until what they show differs from ``unless`` or ``wait_s``
        passes, then the observation is returned."""
        wanted = sorted(set(slots))
        if unless is None or wait_s <= 0:
            return self._instances(env, current(self.caches.pods(env.app, env.environment, wanted)))
        before = sorted(unless, key=lambda i: i.slot)
        seen: list[Instance] = []
        for listed in self.caches.follow(env.app, env.environment, wanted, until=time.monotonic() + wait_s):
            seen = self._instances(env, current(listed))
            if seen != before:
                break
        return seen

    def traffic(self, env: EnvRef) -> TrafficView:
        """The environment's Service: its addresses and ports, and each pod's endpoint state
        (ready, terminating, draining, out) from the EndpointSlices."""
        return self.traffic_.view(env, current(self.api.pods(env.app, env.environment)))

    def _instances(self, env: EnvRef, pods: list[dict[str, Any]]) -> list[Instance]:
        now = time.time()
        verdicts = [classify(p, now) for p in pods]
        # The Secrets are read only when some text could quote them: a pod given secret values whose
        # status says something, or whose reason will quote the health check.
        secrets = self._secrets(env) if any(uses_secrets(p) and (says_something(p) or v.quote_probe)
                                            for p, v in zip(pods, verdicts, strict=True)) else []
        if secrets:
            pods = [redacted(p, secrets) for p in pods]
            verdicts = [classify(p, now) for p in pods]
        events: list[dict[str, Any]] | None = None
        out = []
        for pod, verdict in zip(pods, verdicts, strict=True):
            if verdict.quote_probe:
                said = None
                if verdict.phase is not Phase.STARTING:
                    said = health.check_now(self.api.core, self.namespace, pod, secrets)
                if said is None:
                    events = self.api.events(reason="Unhealthy") if events is None else events
                    said = health.kubelet_said(events, pod["metadata"]["name"])
                reason = f"{verdict.reason}: {said}" if said else verdict.reason
                reason = redact(reason or "", secrets) or None
                verdict = Verdict(verdict.phase, reason)
                if verdict.phase is Phase.FAILED:
                    # The verdict outlives the container: a later liveness restart must not turn
                    # a failed instance back into a starting one (the local runtime stops it).
                    try:
                        self.api.annotate(pod["metadata"]["name"], {m.FAILED: reason or "failed"})
                    except Exception:  # noqa: BLE001 - the next observe reaches the same verdict
                        pass
            out.append(instance(pod, verdict))
        return sorted(out, key=lambda i: i.slot)

    def _secrets(self, env: EnvRef) -> list[str]:
        """Every secret value the environment's pods were given: those of Secrets of replaced
        revisions too, while they last, as their pods' events outlive the pods."""
        return self.api.secret_values(env.app, env.environment)

    def events(self, env: EnvRef, *, instance: str | None = None, since: float | None = None) -> list[Event]:
        pods = {p["metadata"]["name"]: p for p in self.api.pods(env.app, env.environment)}
        # Pod names carry the revision; events are told by instance (the slot), whatever pod they were about.
        mine = re.compile(rf"^{re.escape(env.app)}-{re.escape(env.environment)}-\d+(-[0-9a-f]{{12}})?$")
        keyed: list[tuple[tuple[int, int], Event]] = []
        for ev in self.api.events():
            name = ev["involvedObject"]["name"]
            if mine.match(name) and (instance is None or instance_of(name) == instance):
                keyed.append((sort_key(ev), to_event(ev, pods)))
        for name, pod in pods.items():
            if instance is None or instance_of(name) == instance:
                keyed += [((int(e.time), 1 << 62), e) for e in status_events(pod)]
        # The kubelet quotes what a probe or a hook printed in its events (exec output, stderr).
        secrets = self._secrets(env)
        out = [e for _, e in sorted(keyed, key=lambda pair: pair[0]) if since is None or e.time >= since]
        return [Event(e.time, instance_of(e.instance), e.reason, redact(e.message, secrets), e.type) for e in out]

    def _pod(self, env: EnvRef, name: str) -> dict[str, Any]:
        """The pod an instance runs in now (``name`` is the instance, or a pod name)."""
        slot = re.fullmatch(rf"{re.escape(env.app)}-{re.escape(env.environment)}-(\d+)", instance_of(name))
        pods = current(self.api.pods(env.app, env.environment, slots=[int(slot.group(1))])) if slot else []
        if not pods:
            raise NotFound(f"no instance {name}", hint="list instances with `cairn instances APP ENV`")
        return pods[0]

    # --- inside an instance -----------------------------------------------------------------
    def logs(self, env: EnvRef, instance: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        pod = self._pod(env, instance)
        name = pod["metadata"]["name"]
        started = {c["name"] for c in pod.get("status", {}).get("containerStatuses") or []
                   if "running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {})
                   or (c.get("lastState") or {}).get("terminated")}
        containers = [c for c in (m.CONTAINER, m.LOGS) if c in started]
        if not containers:
            return
        # The kubelet keeps a container's output as the app wrote it; the local shim masks it as it
        # is written, here it is masked as it is read, line by line.
        secrets = self._secrets(env) if uses_secrets(pod) else []
        with edge(f"reading the logs of {instance}"):
            for line in stream.logs(self.api.core, self.namespace, name, containers, follow=follow, tail=tail):
                yield redact(line, secrets)

    def exec(self, env: EnvRef, instance: str, command: Sequence[str], *, user: str, timeout_s: float = 60) -> ExecResult:
        pod = self._pod(env, instance)
        shown = redact(shlex.join(command), self._secrets(env))
        self.api.record(pod, "Exec", f"{user} ran: {shown}")
        with edge(f"running a command in {instance}"):
            return stream.run(self.api.core, self.namespace, pod["metadata"]["name"], m.CONTAINER, command, timeout_s)

    def shell(self, env: EnvRef, instance: str, *, user: str, command: Sequence[str] = ("sh",)) -> int:
        pod = self._pod(env, instance)
        shown = redact(shlex.join(command), self._secrets(env))
        self.api.record(pod, "Shell", f"{user} opened an interactive session: {shown}")
        with edge(f"opening a shell in {instance}"):
            return stream.shell(self.api.core, self.namespace, pod["metadata"]["name"], m.CONTAINER, command)

    # --- stopping ---------------------------------------------------------------------------
    def terminate(self, env: EnvRef, slots: Sequence[int]) -> None:
        pods = self.api.pods(env.app, env.environment, slots=sorted(set(slots))) if slots else []
        if pods:
            self._stop(pods, why="terminated")
        self._collect_garbage(env)

    def _stop(self, pods: list[dict[str, Any]], *, why: str = "", grace_s: int | None = None) -> None:
        """Delete ``pods`` (out of the Service first, then PreStop, SIGTERM, SIGKILL at the grace
        period) and wait until they are gone, recording what cairn saw as events."""
        began = time.monotonic()
        self._delete(pods, why=why, grace_s=grace_s)
        self.stops.wait_gone(pods, why=why, began=began)

    def _delete(self, pods: list[dict[str, Any]], *, why: str, grace_s: int | None = None) -> None:
        if grace_s != 0:  # a pod that never started (admission failed) takes no traffic and runs no PreStop
            self._before_delete(pods, why=why)
        self._delete_all(pods, grace_s)

    def _delete_all(self, pods: list[dict[str, Any]], grace_s: int | None = None) -> None:
        """Delete ``pods`` at once; this process's pod caches then wait to see them go (read-your-writes)."""
        with _pool(len(pods)) as workers:
            list(workers.map(lambda p: self._delete_one(p, grace_s), pods))
        self.caches.expect_deleted(pods)

    def _before_delete(self, pods: list[dict[str, Any]], *, why: str) -> None:
        """Out of the Service first (drain.py), then a record of each PreStop the kubelet will run."""
        self.traffic_.drain(pods)
        self._record_pre_stops(pods)

    def _record_pre_stops(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            container = next(c for c in pod["spec"]["containers"] if c["name"] == m.CONTAINER)
            pre_stop = (container.get("lifecycle") or {}).get("preStop")
            if pre_stop and not pod["metadata"].get("deletionTimestamp"):
                self.api.record(pod, "PreStop", f"running PreStop hook: {pre_stop['exec']['command']}")

    def _delete_one(self, pod: dict[str, Any], grace_s: int | None = None) -> None:
        self.api.delete("Pod", pod["metadata"]["name"], uid=pod["metadata"]["uid"], grace_s=grace_s)

    def _collect_garbage(self, env: EnvRef, *, spare_s: float = 0.0) -> None:
        """Delete the Secrets and ConfigMaps no pod of the environment uses any more, and the
        Service once no pod is left."""
        pods = self.api.pods(env.app, env.environment)
        if not pods:
            self.traffic_.withdraw(env)
        used = {v.get("secret", {}).get("secretName") or (v.get("configMap") or {}).get("name")
                for p in pods for v in p["spec"].get("volumes") or []}
        used |= {e["valueFrom"]["secretKeyRef"]["name"] for p in pods for c in p["spec"]["containers"]
                 for e in c.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}
        for kind in ("Secret", "ConfigMap"):
            for obj in self.api.listed(kind, env.app, env.environment):
                # In the background another ensure may have just applied one for pods it is creating.
                young = time.time() - (parse_time(obj["metadata"].get("creationTimestamp")) or 0.0) < spare_s
                if obj["metadata"]["name"] not in used and not young:
                    self.api.delete(kind, obj["metadata"]["name"])


def _strays(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Live pods that are not their slot's: predecessors whose replacement was created but whose
    delete never came (the process ended during the drain). Out of the Service already, they would
    hold resources until their slot is next replaced: any ensure of the environment deletes them."""
    theirs = {p["metadata"]["uid"] for p in current(pods)}
    return [p for p in pods if not p["metadata"].get("deletionTimestamp") and p["metadata"]["uid"] not in theirs]


def _references(pod: dict[str, Any]) -> bool:
    """Whether ``pod`` uses a Secret or ConfigMap of cairn's."""
    spec = pod["spec"]
    return bool([v for v in spec.get("volumes") or [] if "configMap" in v or "secret" in v]
                or [e for c in spec["containers"] for e in c.get("env") or [] if "valueFrom" in e])
