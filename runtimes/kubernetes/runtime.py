"""``KubernetesRuntime``: the Runtime protocol on a cluster, one Pod per slot under cairn's control."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cairn import packages
from cairn.errors import PermanentError, TemporaryError
from cairn.revision import Revision
from cairn.runtime import EnvRef, Event, ExecResult, Instance, Phase
from cairn.runtimes.kubernetes import health, manifests as m, stream
from cairn.runtimes.kubernetes.api import Api
from cairn.runtimes.kubernetes.errors import edge
from cairn.runtimes.kubernetes.observe import Verdict, classify, instance, sort_key, status_events, to_event

DEFAULT_NAMESPACE = "cairn"
ADMIT_TIMEOUT_S = 60.0
STOP_MARGIN_S = 30.0
WORKERS = 16
POLL_S = 0.05


def _pool(n: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=max(1, min(WORKERS, n)))


class KubernetesRuntime:
    """Instances as Pods named ``{app}-{env}-{slot}`` in one namespace (default ``cairn``)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None) -> None:
        self.namespace = namespace or os.environ.get("CAIRN_K8S_NAMESPACE") or DEFAULT_NAMESPACE
        self.api = Api(kubeconfig, context, self.namespace)

    # --- ensure -----------------------------------------------------------------------------
    def ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, *, secrets: Mapping[str, str] | None = None,
               replace_failed: bool = False, order: str | None = None) -> None:
        secrets = dict(secrets or {})
        missing = sorted(set(revision.spec.secret_env) - set(secrets))
        if missing:
            raise PermanentError(f"no value for secret variables {', '.join(missing)}", hint="pass every secret_env value to ensure")
        package = self._package(revision)
        self.api.ensure_namespace()
        pods = {int(p["metadata"]["labels"][m.SLOT]): p for p in self.api.pods(env.app, env.environment)}
        current = {i.slot: i for i in self._instances(list(pods.values()))}
        create: list[int] = []
        replace: list[int] = []
        for slot in slots:
            have = current.get(slot)
            if have is None:
                create.append(slot)
            elif (have.revision != revision.digest or have.phase is Phase.TERMINATING
                  or (replace_failed and have.phase is Phase.FAILED)):
                replace.append(slot)
        if not create and not replace:
            return
        defaults = self.api.pod_defaults()
        if revision.spec.secret_env:
            self.api.apply(m.secret(revision, self.namespace, secrets))
        if revision.spec.files:
            self.api.apply(m.files_configmap(revision, self.namespace))
        if package is not None:
            self.api.apply(m.package_configmap(revision, self.namespace, package))
        if replace:
            self._stop([pods[s] for s in replace], why=f"replaced by revision {revision.short}")
        new = {slot: m.pod(revision, slot, self.namespace, order=order, defaults=defaults) for slot in sorted(create + replace)}
        with _pool(len(new)) as pool:
            list(pool.map(self.api.apply, new.values()))
        problems = self._admit(env, new, revision)
        if problems:
            self._stop([p for p in self.api.pods(env.app, env.environment) if p["metadata"]["name"] in problems], grace_s=0)
            self._collect_garbage(env)
            first = next(iter(problems.values()))
            raise PermanentError(f"{len(problems)} instance(s) cannot start: {first}", hint=_hint(first))
        if any(_references(pods[s]) for s in replace):  # only a replaced pod can leave objects unused
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

    def _admit(self, env: EnvRef, new: dict[int, dict[str, Any]], revision: Revision) -> dict[str, str]:
        """Wait until each new pod is past scheduling, volumes and image resolution, so an image that
        is not there, an unschedulable pod or an unusable host path fails ensure itself, with the
        cluster's reason. Readiness is not waited for (that is observe's)."""
        pending = {p["metadata"]["name"]: p for p in new.values()}
        problems: dict[str, str] = {}
        deadline = time.monotonic() + ADMIT_TIMEOUT_S
        while pending and time.monotonic() < deadline:
            listed = self.api.pods(env.app, env.environment, slots=sorted(new))
            for name in set(pending) - {p["metadata"]["name"] for p in listed}:
                # Deleted by someone else before it started (a stale delete of its predecessor's
                # name, as kwok sends): the slot is still ours to fill.
                self.api.apply(pending[name])
            for pod in listed:
                name = pod["metadata"]["name"]
                if name not in pending:
                    continue
                verdict = classify(pod, time.time())
                if verdict.phase is Phase.FAILED or (verdict.reason or "").startswith("Unschedulable"):
                    problems[name] = verdict.reason or "failed"
                    pending.pop(name)
                elif verdict.phase is not Phase.PENDING or verdict.reason == "unpacking the code package" and _init_started(pod):
                    pending.pop(name)
            if pending:
                for event in self.api.events(reason="FailedMount"):
                    name = event["involvedObject"]["name"]
                    said = event.get("message", "")
                    found = re.search(r'volume "dir-(\d+)"', said)
                    if name in pending and found:
                        d = revision.spec.dirs[int(found.group(1))]
                        problems[name] = f"dirs[{found.group(1)}]: host path {d.host_path} for {d.path} cannot be mounted: {said}"
                        pending.pop(name)
                time.sleep(POLL_S)
        return problems

    # --- observe ----------------------------------------------------------------------------
    def observe(self, env: EnvRef) -> list[Instance]:
        return self._instances(self.api.pods(env.app, env.environment))

    def _instances(self, pods: list[dict[str, Any]]) -> list[Instance]:
        now = time.time()
        verdicts = [classify(p, now) for p in pods]
        events: list[dict[str, Any]] | None = None
        out = []
        for pod, verdict in zip(pods, verdicts, strict=True):
            if verdict.quote_probe:
                said = None
                if verdict.phase is not Phase.STARTING:
                    said = health.check_now(self.api.core, self.namespace, pod)
                if said is None:
                    events = self.api.events(reason="Unhealthy") if events is None else events
                    said = health.kubelet_said(events, pod["metadata"]["name"])
                reason = f"{verdict.reason}: {said}" if said else verdict.reason
                reason = health.redact(reason or "", self._secrets(pod)) or None
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

    def _secrets(self, pod: dict[str, Any]) -> list[str]:
        names = {e["valueFrom"]["secretKeyRef"]["name"] for c in pod["spec"]["containers"] for e in c.get("env") or []
                 if "secretKeyRef" in (e.get("valueFrom") or {})}
        return [v for name in names for v in self.api.secret_values(name)]

    def events(self, env: EnvRef, *, instance: str | None = None, since: float | None = None) -> list[Event]:
        pods = {p["metadata"]["name"]: p for p in self.api.pods(env.app, env.environment)}
        mine = re.compile(rf"^{re.escape(env.app)}-{re.escape(env.environment)}-\d+$")
        keyed: list[tuple[tuple[int, int], Event]] = []
        for ev in self.api.events(name=instance):
            if mine.match(ev["involvedObject"]["name"]):
                keyed.append((sort_key(ev), to_event(ev, pods)))
        for name, pod in pods.items():
            if instance is None or name == instance:
                keyed += [((int(e.time), 1 << 62), e) for e in status_events(pod)]
        secrets = [v for p in pods.values() for v in self._secrets(p)]
        out = [e for _, e in sorted(keyed, key=lambda pair: pair[0]) if since is None or e.time >= since]
        if secrets:
            out = [Event(e.time, e.instance, e.reason, health.redact(e.message, secrets), e.type) for e in out]
        return out

    # --- inside an instance -----------------------------------------------------------------
    def logs(self, env: EnvRef, instance: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        pod = self.api.pod(instance)
        started = {c["name"] for c in pod.get("status", {}).get("containerStatuses") or []
                   if "running" in (c.get("state") or {}) or "terminated" in (c.get("state") or {})
                   or (c.get("lastState") or {}).get("terminated")}
        containers = [c for c in (m.CONTAINER, m.LOGS) if c in started]
        if not containers:
            return
        with edge(f"reading the logs of {instance}"):
            yield from stream.logs(self.api.core, self.namespace, instance, containers, follow=follow, tail=tail)

    def exec(self, env: EnvRef, instance: str, command: Sequence[str], *, user: str, timeout_s: float = 60) -> ExecResult:
        pod = self.api.pod(instance)
        shown = health.redact(shlex.join(command), self._secrets(pod))
        self.api.record(pod, "Exec", f"{user} ran: {shown}")
        with edge(f"running a command in {instance}"):
            return stream.run(self.api.core, self.namespace, instance, m.CONTAINER, command, timeout_s)

    def shell(self, env: EnvRef, instance: str, *, user: str, command: Sequence[str] = ("sh",)) -> int:
        pod = self.api.pod(instance)
        shown = health.redact(shlex.join(command), self._secrets(pod))
        self.api.record(pod, "Shell", f"{user} opened an interactive session: {shown}")
        with edge(f"opening a shell in {instance}"):
            return stream.shell(self.api.core, self.namespace, instance, m.CONTAINER, command)

    # --- stopping ---------------------------------------------------------------------------
    def terminate(self, env: EnvRef, slots: Sequence[int]) -> None:
        wanted = {str(s) for s in slots}
        pods = [p for p in self.api.pods(env.app, env.environment) if p["metadata"]["labels"].get(m.SLOT) in wanted]
        if pods:
            self._stop(pods, why="terminated")
        self._collect_garbage(env)

    def _stop(self, pods: list[dict[str, Any]], *, why: str = "", grace_s: int | None = None) -> None:
        """Delete ``pods`` (the kubelet runs PreStop, SIGTERM, SIGKILL at the grace period) and wait
        until they are gone, recording what cairn saw as events."""
        began = time.monotonic()
        for pod in pods:
            container = next(c for c in pod["spec"]["containers"] if c["name"] == m.CONTAINER)
            pre_stop = (container.get("lifecycle") or {}).get("preStop")
            if pre_stop and grace_s != 0 and not pod["metadata"].get("deletionTimestamp"):
                self.api.record(pod, "PreStop", f"running PreStop hook: {pre_stop['exec']['command']}")
        with _pool(len(pods)) as pool:
            list(pool.map(lambda p: self.api.delete("Pod", p["metadata"]["name"], uid=p["metadata"]["uid"], grace_s=grace_s), pods))
        grace = max(int(p["spec"].get("terminationGracePeriodSeconds", 30)) for p in pods)
        uids = {p["metadata"]["uid"]: p for p in pods}
        last: dict[str, dict[str, Any]] = {}
        records = _pool(len(pods))

        labels = pods[0]["metadata"]["labels"]
        slots = sorted({int(p["metadata"]["labels"][m.SLOT]) for p in pods})

        def gone() -> bool:
            alive = {}
            for p in self.api.pods(labels[m.APP], labels[m.ENV], slots=slots):
                if p["metadata"]["uid"] in uids:
                    alive[p["metadata"]["uid"]] = p
            last.update(alive)
            for uid in [u for u in uids if u not in alive]:
                records.submit(self._stopped, uids.pop(uid), last.get(uid), time.monotonic() - began, why)
            return not uids

        # PreStop and SIGTERM share the grace period; the kubelet adds at most 2 s of SIGTERM.
        with records:
            stopped = self.api.wait("pods gone", gone, grace + STOP_MARGIN_S, poll_s=POLL_S)
        if not stopped:
            raise TemporaryError(f"{len(uids)} pod(s) still stopping after {grace + STOP_MARGIN_S:g}s",
                                 hint="the node may be unreachable; check `kubectl get pods` and the kubelet")

    def _stopped(self, pod: dict[str, Any], seen: dict[str, Any] | None, took: float, why: str) -> None:
        app = next((c for c in ((seen or pod).get("status", {}).get("containerStatuses") or []) if c["name"] == m.CONTAINER), {})
        ended = (app.get("state") or {}).get("terminated") or {}
        code = ended.get("exitCode")
        said = f"exit code {code}" if code is not None else "exit code not reported"
        try:
            if code == 137:
                self.api.record(pod, "Killing", "grace period ran out: SIGKILL", warning=True)
            self.api.record(pod, "Stopped", f"Stopped container ({said}) {took:.1f}s after the stop began ({why})")
        except Exception:  # noqa: BLE001 - the stop happened; its record is best effort
            pass

    def _collect_garbage(self, env: EnvRef) -> None:
        """Delete the Secrets and ConfigMaps no pod of the environment uses any more."""
        pods = self.api.pods(env.app, env.environment)
        used = {v.get("secret", {}).get("secretName") or (v.get("configMap") or {}).get("name")
                for p in pods for v in p["spec"].get("volumes") or []}
        used |= {e["valueFrom"]["secretKeyRef"]["name"] for p in pods for c in p["spec"]["containers"]
                 for e in c.get("env") or [] if "secretKeyRef" in (e.get("valueFrom") or {})}
        for kind in ("Secret", "ConfigMap"):
            for obj in self.api.listed(kind, env.app, env.environment):
                if obj["metadata"]["name"] not in used:
                    self.api.delete(kind, obj["metadata"]["name"])


def _references(pod: dict[str, Any]) -> bool:
    """Whether ``pod`` uses a Secret or ConfigMap of cairn's."""
    spec = pod["spec"]
    return bool([v for v in spec.get("volumes") or [] if "configMap" in v or "secret" in v]
                or [e for c in spec["containers"] for e in c.get("env") or [] if "valueFrom" in e])


def _init_started(pod: dict[str, Any]) -> bool:
    return any("running" in (c.get("state") or {}) for c in pod.get("status", {}).get("initContainerStatuses") or [])


def _hint(reason: str) -> str:
    if "image" in reason and "not present" in reason:
        return "import the image on the nodes (ctr -n k8s.io images import) or push it to a registry the nodes can pull from"
    if reason.startswith("Unschedulable"):
        return "lower cpu/memory, add nodes, or fix the namespace's pod defaults (nodeSelector, tolerations)"
    if "host path" in reason:
        return "pick a host_path the kubelet can create as a directory on the node"
    return "fix the environment's configuration, then release again"
