"""The Runtime protocol: the one small interface every place instances run must satisfy.

Release flows speak only this protocol (httpx's transport idea: one protocol, many
implementations). Two implementations exist: ``cairn.runtimes.local`` (a node agent supervising
processes on this machine) and ``cairn.runtimes.kubernetes`` (the official client). Both pass
``tests/behaviour``; each method's docstring below says what both do, and where they differ.

Rules every implementation keeps:

- ``ensure`` is idempotent: calling it twice equals calling it once. A slot that already runs
  the revision (starting, ready or even failed) is left alone, unless ``replace_failed`` asks to
  recreate the failed ones (retry).
- Reads (``observe``, ``observe_slots``) are observed state, and **read your writes**: a read
  that starts after a write of this process returned (``ensure``, ``terminate``) sees that write
  (the instances it created, not the ones it removed). Beyond that a read may be a little old:
  what others change (a shim's status, a pod's readiness) shows within the runtime's own latency,
  as it would between two fresh reads. The local runtime reads its state directory on every
  call; the kubernetes runtime reads a watch-fed pod cache per environment and process
  (``runtimes/kubernetes/informer.py``), which a read waits on until it shows this process's
  creates and deletes, and lists the pods instead when the cache cannot say.
- Secret values arrive in ``ensure(secrets=...)`` and never reach logs, events, state files or
  errors.
- Vendor errors are translated into ``cairn.errors`` (``PermanentError`` / ``TemporaryError``)
  with a hint, at the implementation's edge.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable

from cairn.naming import instance_name
from cairn.revision import Revision


@dataclass(frozen=True)
class EnvRef:
    """Which environment's instances: app and environment on a cluster (a namespace of instances)."""

    cluster: str
    app: str
    environment: str

    def instance(self, slot: int) -> str:
        return instance_name(self.app, self.environment, slot)


class Phase(StrEnum):
    PENDING = "pending"
    """Created, not started yet (scheduling, unpacking, pulling)."""
    STARTING = "starting"
    """Process running; PostStart or the health check has not passed yet."""
    RUNNING = "running"
    """Ready: health check passed (or none configured and PostStart finished)."""
    UNHEALTHY = "unhealthy"
    """Was ready, now failing its check; will be restarted."""
    BACKOFF = "backoff"
    """Exited or was killed; waiting for the next restart (Kubernetes CrashLoopBackOff)."""
    FAILED = "failed"
    """Cannot become ready without a change: e.g. a health check that never passes, a missing image."""
    TERMINATING = "terminating"
    """PreStop or the grace period in progress."""


@dataclass(frozen=True)
class Instance:
    """One instance as the runtime reports it."""

    name: str
    slot: int
    revision: str
    """Digest of the revision it runs."""
    phase: Phase
    ready: bool
    address: str | None = None
    ports: Mapping[int, int] = field(default_factory=dict)
    """Container port -> port reachable at ``address``."""
    restarts: int = 0
    started_at: float | None = None
    """Epoch seconds of the current process's start; age = now - started_at."""
    reason: str | None = None
    """Why it is not ready or failed, in words a person acts on."""
    exit_code: int | None = None

    @property
    def failed(self) -> bool:
        return self.phase is Phase.FAILED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = str(self.phase)
        data["ports"] = {str(k): v for k, v in self.ports.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Instance:
        """The inverse of :meth:`to_dict` (JSON keys are strings, the phase a plain value)."""
        return cls(**{**data, "phase": Phase(data["phase"]), "ports": {int(k): v for k, v in data["ports"].items()}})


@dataclass(frozen=True)
class Event:
    """A system event about an instance, as ``kubectl get events`` shows them."""

    time: float
    instance: str
    reason: str
    """Scheduled, Unpacked, Started, PostStartFailed, Unhealthy, Killing, OOMKilled, BackOff, PreStop, Stopped, Exec..."""
    message: str
    type: str = "Normal"
    """"Normal" or "Warning"."""

    @property
    def warning(self) -> bool:
        return self.type == "Warning"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str
    stderr: str


BackendState = Literal["ready", "draining", "terminating", "out"]
"""Where new connections go: ``ready`` takes them; ``draining`` is out of rotation while its open
connections finish (cairn is about to stop it); ``terminating`` is being stopped; ``out`` takes
none (not ready, or gone)."""


@dataclass(frozen=True)
class BackendView:
    """One instance behind a listener, as the runtime's traffic layer sees it."""

    instance: str
    """The instance (local) or the pod that runs it now (kubernetes)."""
    address: str
    """``ip:port`` connections are forwarded to."""
    state: BackendState
    open: int | None = None
    """Connections open now; ``None`` where the runtime counts none (kubernetes)."""
    connections: int | None = None
    """Connections forwarded in all; ``None`` where the runtime counts none."""
    refused: int | None = None
    """Connections it refused (the balancer then tried another); ``None`` where not counted."""
    version: str | None = None
    """The version the instance runs, where the runtime labels it (kubernetes)."""
    conditions: Mapping[str, bool] = field(default_factory=dict)
    """The endpoint's conditions as the runtime reports them (kubernetes: ready, serving, terminating)."""


@dataclass(frozen=True)
class ListenerView:
    """One address traffic for the environment arrives at: a balancer listener or a Service port."""

    address: str
    """``host:port`` it listens on (local: the traffic host and the host_port; kubernetes: the ClusterIP and port)."""
    host_port: int
    listening: bool
    error: str | None = None
    """Why it does not listen, when it does not."""
    name: str | None = None
    """The port's name (kubernetes Service ports are named)."""
    also: tuple[str, ...] = ()
    """Other addresses that reach it (a node port, a load balancer's ingress)."""
    open: int | None = None
    connections: int | None = None
    dropped: int | None = None
    """Connections closed because no backend could take them; ``None`` where not counted."""
    backends: tuple[BackendView, ...] = ()


@dataclass(frozen=True)
class TrafficView:
    """How traffic reaches an environment's instances: what ``cairn traffic`` shows. Both runtimes
    return every field (``--json`` keys are stable); what one runtime cannot know is ``None``."""

    cluster: str
    app: str
    environment: str
    policy: str
    """How a backend is chosen: the balancer's policy (local), or the Service and kube-proxy (kubernetes)."""
    counts: str | None = None
    """What the counters count (``"connections"``: the local balancer is TCP and parses no
    request); ``None`` where nothing is counted (kubernetes)."""
    drain_s: float | None = None
    """Seconds a backend stays out of rotation before it is stopped, beyond the endpoints dropping
    it (kubernetes); ``None`` where draining waits on open connections instead (local)."""
    service: str | None = None
    """The Service's name (kubernetes), ``None`` without one."""
    listeners: tuple[ListenerView, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """As JSON carries it (``cairn traffic --json``, the local agent's answer): lists for tuples."""
        return _plain(asdict(self))  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrafficView:
        """The inverse of :meth:`to_dict` (as JSON carries it: lists for tuples)."""
        listeners = tuple(
            ListenerView(**{**lis, "also": tuple(lis.get("also") or ()),
                            "backends": tuple(BackendView(**b) for b in lis.get("backends") or ())})
            for lis in data.get("listeners") or ())
        return cls(**{**data, "listeners": listeners})


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@runtime_checkable
class Runtime(Protocol):
    """Where instances run. Every method may raise ``PermanentError`` or ``TemporaryError``
    (``NotFound`` for an instance that does not exist)."""

    def ensure(
        self,
        env: EnvRef,
        slots: Sequence[int],
        revision: Revision,
        *,
        secrets: Mapping[str, str] | None = None,
        replace_failed: bool = False,
        order: str | None = None,
        pull_login: tuple[str, str] | None = None,
    ) -> None:
        """Bring each slot to ``revision``: replace a slot running another revision, create a
        missing one, leave one already on it (a failed one too, unless ``replace_failed``).
        ``secrets`` maps each secret_env variable to its value; ``pull_login`` is the
        (username, password) for a private registry (from the ``image_pull_secret`` block); ``order`` labels what it creates
        with the release order. What can be checked is checked before anything is created
        (both: secrets and the code package; local also the image, host paths and a taken
        host_port), and instances that cannot start are removed again (kubernetes: the cluster's
        admission, below): a refused ``ensure`` leaves nothing half-started.

        Returns once the new instances exist, not when they are ready (readiness is for
        ``observe``). A replaced instance leaves traffic first and then stops (PreStop, SIGTERM,
        SIGKILL at the grace period) off the caller's path: local, the agent retires it in a
        thread; kubernetes, its pod is deleted after the Service's endpoints dropped it, while
        its replacement already starts. Kubernetes also waits (at most 60 s) until each new pod
        is past scheduling, volumes and image, and fails with the cluster's reason otherwise."""
        ...

    def observe(self, env: EnvRef) -> list[Instance]:
        """Every instance of the environment, sorted by slot; an instance being replaced shows as
        its new one. Read your writes (see the module's rules)."""
        ...

    def observe_slots(self, env: EnvRef, slots: Sequence[int], *, unless: Sequence[Instance] | None = None,
                      wait_s: float = 0.0) -> list[Instance]:
        """``observe`` narrowed to ``slots`` (sorted by slot; a slot without an instance is absent),
        reading only those where the runtime can (kubernetes: the cache's slot index, or a label
        selector), so waiting on 30 of 300 instances does not read 300.

        The long poll: given ``unless`` (an earlier answer) and ``wait_s > 0``, it blocks until the
        observation differs from ``unless`` or ``wait_s`` passes, then returns the current one,
        so a health wait learns of readiness as it happens instead of one poll later. Without
        ``unless`` (or with ``wait_s <= 0``) it answers at once. Local: the agent waits on inotify
        for the files its shims write (re-reading every 0.5 s for what no file shows, e.g. a
        killed shim) and bounds one wait at 60 s; kubernetes: it follows the pod cache, woken by
        the watch events of these slots' pods (at least once a second, as some verdicts come
        with time), or by a watch of its own when the cache cannot say."""
        ...

    def events(self, env: EnvRef, *, instance: str | None = None, since: float | None = None) -> list[Event]:
        """Events of the environment (or one instance), oldest first, from ``since`` (epoch seconds)
        on. Local: the agent's event log of the environment; kubernetes: the namespace's Events
        about the environment's pods plus what their statuses say (exits, OOM kills), read
        fresh. Secret values are redacted."""
        ...

    def logs(self, env: EnvRef, instance: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """Log lines of an instance (stdout/stderr, with timestamps), the last ``tail`` only;
        ``follow`` keeps streaming until the instance is gone or the caller stops reading."""
        ...

    def exec(self, env: EnvRef, instance: str, command: Sequence[str], *, user: str, timeout_s: float = 60) -> ExecResult:
        """Run ``command`` inside the instance (its env, paths and cwd), at most ``timeout_s``.
        Recorded as an ``Exec`` event naming ``user``, with secret values redacted."""
        ...

    def shell(self, env: EnvRef, instance: str, *, user: str, command: Sequence[str] = ("sh",)) -> int:
        """An interactive session on the caller's terminal inside the instance; returns its exit code.
        Recorded as a ``Shell`` event naming ``user``."""
        ...

    def traffic(self, env: EnvRef) -> TrafficView:
        """How traffic reaches the environment now: local, its load balancer's listeners (one per
        host_port) and each instance's backend state with connection counts; kubernetes, its
        Service (one listener per port) and each pod's endpoint state from the EndpointSlices,
        read fresh. An environment with no instance, or no port traffic enters by (local: no
        host_port), has no listener."""
        ...

    def terminate(self, env: EnvRef, slots: Sequence[int]) -> None:
        """Stop the instances in ``slots`` gracefully (out of traffic, PreStop, SIGTERM, SIGKILL
        at the grace period) and remove them; returns once they are gone. Idempotent: a missing
        slot is fine."""
        ...
