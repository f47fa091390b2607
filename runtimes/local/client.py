"""``LocalRuntime``: the Runtime protocol spoken to the local agent over its unix socket.

Transport failures become ``TemporaryError`` (the agent may come back); the agent's own error
answers are rebuilt as the ``cairn.errors`` class it raised, hint included.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from cairn import errors
from cairn.revision import Revision
from cairn.runtime import EnvRef, Event, ExecResult, Instance, TrafficView
from cairn.runtimes.local import enter, oci
from cairn.runtimes.local.runc import Runc
from cairn.runtimes.local.state import default_state_dir

ERRORS: dict[str, type[errors.CairnError]] = {
    "NotFound": errors.NotFound, "PermanentError": errors.PermanentError, "TemporaryError": errors.TemporaryError,
}
# How often the long poll re-reads when the agent cannot wait itself (one started before it could).
OLD_AGENT_POLL_S = 0.05


def _env(env: EnvRef) -> dict[str, str]:
    return {"cluster": env.cluster, "app": env.app, "environment": env.environment}


class LocalRuntime:
    """The local runtime. ``autostart`` starts the agent on first use when it is not running."""

    def __init__(self, state_dir: Path | str | None = None, *, autostart: bool = False) -> None:
        self.state_dir = default_state_dir(state_dir)
        self.autostart = autostart
        self.socket = self.state_dir / "agent.sock"
        self._shared: httpx.Client | None = None
        self._shared_pid = 0
        self._shared_lock = threading.Lock()

    def _client(self, timeout: float | None) -> httpx.Client:
        # A unix socket carries no TLS: verify=False spares loading the CA bundle (~0.1-0.4 s).
        transport = httpx.HTTPTransport(uds=str(self.socket), verify=False)
        return httpx.Client(transport=transport, base_url="http://cairn-agent", timeout=timeout)

    def _requests(self) -> httpx.Client:
        """One client for every call of this runtime (httpx's clients may be shared by threads):
        a new one per call built an SSL context each time, a few ms on every read of a health wait.
        Its connections are kept alive between calls. A forked process (a warm-started flow run)
        makes its own: two processes must never talk over one inherited connection."""
        with self._shared_lock:
            if self._shared is None or self._shared_pid != os.getpid():
                self._shared, self._shared_pid = self._client(30), os.getpid()
            return self._shared

    def _unreachable(self, exc: Exception) -> errors.TemporaryError:
        return errors.TemporaryError(
            f"the local agent is not reachable at {self.socket} ({type(exc).__name__})",
            hint="start it with `cairn agent start` (cairn.runtimes.local.start_agent)",
        )

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              body: Mapping[str, Any] | None = None, timeout: float | None = 30) -> Any:
        if self.autostart and not self.socket.exists():
            from cairn.runtimes.local.control import start_agent

            start_agent(self.state_dir)
        try:
            response = self._requests().request(method, path, params=params, json=body, timeout=timeout)
        except (httpx.TransportError, OSError) as exc:
            raise self._unreachable(exc) from None
        try:
            data = response.json()
        except ValueError:  # not the agent's answer: e.g. its server cut the request short while stopping
            raise errors.TemporaryError(f"the local agent answered {response.status_code} without a result",
                                        hint="retry; see agent.log in the agent's state directory") from None
        if response.status_code >= 400:
            kind = ERRORS.get(data.get("error", ""), errors.PermanentError)
            raise kind(data.get("message", "agent error"), hint=data.get("hint"))
        return data

    # --- the protocol ----------------------------------------------------------------------
    def ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, *, secrets: Mapping[str, str] | None = None,
               replace_failed: bool = False, order: str | None = None, pull_login: tuple[str, str] | None = None) -> None:
        # Over the agent's socket (mode 0600, root's): the values live in the request only.
        body = {
            "env": _env(env), "slots": list(slots), "revision": revision.model_dump(mode="json", exclude={"digest"}),
            "secrets": dict(secrets or {}), "replace_failed": replace_failed, "order": order,
            "pull_login": list(pull_login) if pull_login else None,
        }
        self._call("POST", "/ensure", body=body, timeout=None)

    def observe(self, env: EnvRef) -> list[Instance]:
        return [Instance.from_dict(row) for row in self._call("GET", "/observe", params=_env(env))]

    def observe_slots(self, env: EnvRef, slots: Sequence[int], *, unless: Sequence[Instance] | None = None,
                      wait_s: float = 0.0) -> list[Instance]:
        """The slots' instances, sorted by slot. With ``unless`` and ``wait_s``, a long poll: the agent
        answers once they differ from ``unless`` (the kernel tells it of every file its supervisors write),
        or after ``wait_s``: a health wait learns of readiness at once, with one request per change."""
        body = {"env": _env(env), "slots": list(slots), "wait_s": wait_s,
                "unless": None if unless is None else [i.to_dict() for i in unless]}
        try:
            rows = self._call("POST", "/observe_slots", body=body, timeout=wait_s + 30)
        except errors.NotFound:
            return self._poll_slots(env, slots, unless, wait_s)
        return [Instance.from_dict(row) for row in rows]

    def _poll_slots(self, env: EnvRef, slots: Sequence[int], unless: Sequence[Instance] | None,
                    wait_s: float) -> list[Instance]:
        """The long poll as re-reads, for an agent started before it had ``/observe_slots``
        (instances and their agent outlive an upgrade of cairn)."""
        wanted, before = set(slots), None if unless is None else sorted(unless, key=lambda i: i.slot)
        deadline = time.monotonic() + wait_s
        while True:
            found = [i for i in self.observe(env) if i.slot in wanted]
            if before is None or found != before or time.monotonic() >= deadline:
                return found
            time.sleep(min(OLD_AGENT_POLL_S, max(0.0, deadline - time.monotonic())))

    def events(self, env: EnvRef, *, instance: str | None = None, since: float | None = None) -> list[Event]:
        params: dict[str, Any] = _env(env)
        if instance:
            params["instance"] = instance
        if since is not None:
            params["since"] = since
        return [Event(**row) for row in self._call("GET", "/events", params=params)]

    def logs(self, env: EnvRef, instance: str, *, follow: bool = False, tail: int | None = None) -> Iterator[str]:
        params: dict[str, Any] = {**_env(env), "instance": instance, "follow": "1" if follow else "0"}
        if tail is not None:
            params["tail"] = tail
        try:
            with self._client(None) as client, client.stream("GET", "/logs", params=params) as response:
                if response.status_code >= 400:
                    data = json.loads(response.read())
                    kind = ERRORS.get(data.get("error", ""), errors.PermanentError)
                    raise kind(data.get("message", "agent error"), hint=data.get("hint"))
                yield from response.iter_lines()
        except (httpx.TransportError, OSError) as exc:
            raise self._unreachable(exc) from None

    def exec(self, env: EnvRef, instance: str, command: Sequence[str], *, user: str, timeout_s: float = 60) -> ExecResult:
        body = {"env": _env(env), "instance": instance, "command": list(command), "user": user, "timeout_s": timeout_s}
        data = self._call("POST", "/exec", body=body, timeout=timeout_s + 30)
        return ExecResult(exit_code=data["exit_code"], stdout=data["stdout"], stderr=data["stderr"])

    def shell(self, env: EnvRef, instance: str, *, user: str, command: Sequence[str] = ("sh",)) -> int:
        # The agent records the session and names the process; the terminal stays the caller's own,
        # so job control, resizing and raw mode just work (as `kubectl exec -it` feels).
        if os.geteuid() != 0:
            raise errors.PermanentError("an interactive shell into a local instance needs root", hint="run as root (sudo)")
        body = {"env": _env(env), "instance": instance, "command": list(command), "user": user}
        joined = self._call("POST", "/enter", body=body)
        secrets = enter.secrets_of(int(joined["pid"]), joined["secret_names"])
        process = oci.exec_process({"process": joined["process"]}, list(command), secrets)
        return Runc(Path(joined["runc_root"])).interactive(joined["container"], process)

    def traffic(self, env: EnvRef) -> TrafficView:
        """The environment's load balancer: listeners, backends (ready/draining/out), connections."""
        return TrafficView.from_dict(self._call("GET", "/traffic", params=_env(env)))

    def terminate(self, env: EnvRef, slots: Sequence[int]) -> None:
        self._call("POST", "/terminate", body={"env": _env(env), "slots": list(slots)}, timeout=None)
