"""The Runtime protocol: the one small interface every place instances run must satisfy.

Release flows speak only this protocol (httpx's transport idea: one protocol, many
implementations). Two implementations exist: ``cairn.runtimes.local`` (a node agent supervising
processes on this machine) and ``cairn.runtimes.kubernetes`` (the official client). Both pass
``tests/behaviour``.

Rules every implementation keeps:

- ``ensure`` is idempotent: calling it twice equals calling it once. A slot that already runs
  the revision (starting, ready or even failed) is left alone, unless ``replace_failed`` asks to
  recreate the failed ones (retry).
- ``observe`` reads the truth from the runtime every time; nothing is cached between calls.
- Secret values arrive in ``ensure(secrets=...)`` and never reach logs, events, state files or
  errors.
- Vendor errors are translated into ``cairn.errors`` (``PermanentError`` / ``TemporaryError``)
  with a hint, at the implementation's edge.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

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


@runtime_checkable
class Runtime(Protocol):
    """Where instances run. Every method may raise ``PermanentError`` or ``TemporaryError``.

    Optional, looked up with ``getattr`` by the health wait (``cairn.tasks.batch.wait_healthy``):

    - ``observe_slots(env, slots) -> list[Instance]``: ``observe`` narrowed to ``slots`` (sorted by
      slot), for a runtime where that is cheaper than reading every instance.
    - ``long_poll = True`` (a class attribute) with ``observe_slots(self, env: EnvRef, slots:
      Sequence[int], *, unless: Sequence[Instance] | None = None, wait_s: float = 0.0) ->
      list[Instance]``: given ``unless`` and ``wait_s > 0``, block until the observation of the
      slots differs from ``unless`` (both lists of ``Instance`` sorted by slot) or ``wait_s``
      passes, then return the current observation. A health wait then learns of readiness as it
      happens instead of one poll later. Without ``long_poll`` it polls every ``poll_s`` seconds
      (an optional attribute, default 0.1).
    """

    def ensure(
        self,
        env: EnvRef,
        slots: Sequence[int],
        revision: Revision,
        *,
        secrets: Mapping[str, str] | None = None,
        replace_failed: bool = False,
        order: str | None = None,
    ) -> None:
        """Bring each slot to ``revision``: replace (PreStop, grace, then start) a slot running another
        revision, create a missing one, leave one already on it. Returns once the new instances are
        created, not when they are ready: readiness is for ``observe``. ``secrets`` maps each
        secret_env variable to its value. ``order`` labels what it creates with the release order."""
        ...

    def observe(self, env: EnvRef) -> list[Instance]:
        """Every instance of the environment, sorted by slot, read fresh from the runtime."""
        ...

    def events(self, env: EnvRef, *, instance: str | None = None, since: float | None = None) -> list[Event]:
        """Events of the environment (or one instance), oldest first."""
        ...

    def logs(self, env: EnvRef, instance: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        """Log lines of an instance (stdout/stderr, with timestamps); ``follow`` keeps streaming."""
        ...

    def exec(self, env: EnvRef, instance: str, command: Sequence[str], *, user: str, timeout_s: float = 60) -> ExecResult:
        """Run ``command`` inside the instance (its env, paths and cwd). Recorded as an event naming ``user``."""
        ...

    def shell(self, env: EnvRef, instance: str, *, user: str, command: Sequence[str] = ("sh",)) -> int:
        """An interactive session on the caller's terminal inside the instance; returns its exit code."""
        ...

    def terminate(self, env: EnvRef, slots: Sequence[int]) -> None:
        """Stop the instances in ``slots`` gracefully (PreStop, SIGTERM, SIGKILL at the grace period)
        and remove them. Idempotent: a missing slot is fine."""
        ...
