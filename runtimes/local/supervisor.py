"""One instance's life, supervised from the agent: start, PostStart, probes, restarts, the stop.

The kubelet's part of a pod, one thread per instance in the agent. What stays beside the
container is the shim (shim.c: its stdio, its exit code, under 1 MiB); everything that decides
lives here. Nothing here is remembered only in memory: phase, readiness, restarts and pids go to
``status.json`` as they change, and a restarted agent adopts each instance where it stands
(``adopt``): a running container is probed on, one that ended while no agent watched is
restarted (or fails, with the reason, when its secret values died with it).

Secrets are held in this thread's memory, passed to each run on the shim's stdin and to each
exec inside the process spec's pipe. After an agent restart they are read back from the app's
own environment (``/proc/PID/environ``): the only place they live outside a Prefect Secret.
"""

from __future__ import annotations

import glob
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cairn.config import EnvironmentSpec
from cairn.errors import CairnError
from cairn.procs import start_time
from cairn.redaction import redact
from cairn.runtime import ExecResult, Phase
from cairn.runtimes.local import enter, events, probes
from cairn.runtimes.local.container import Container
from cairn.runtimes.local.state import write_json

POST_START_TIMEOUT_S = 120.0
TICK_S = 0.1  # how often a wait looks at the container's exit record


def backoff_delay(base: float, attempt: int) -> float:
    """Kubernetes' crash-loop back-off: base, doubling, capped at 30x base (10 s -> 5 min)."""
    return float(min(base * (2**attempt), base * 30))


class Supervisor:
    def __init__(self, directory: Path, config: dict[str, Any], container: Container, secrets: Mapping[str, str],
                 status: dict[str, Any] | None = None) -> None:
        self.dir, self.cfg, self.container = directory, config, container
        self.spec = EnvironmentSpec.model_validate(config["spec"])
        self.name: str = config["instance"]
        self._secrets = dict(secrets)
        self.stop_asked = threading.Event()
        self.kill_now = False
        self.base = float(config.get("backoff_base_s", 10.0))
        self.run_started = time.monotonic()
        self.status: dict[str, Any] = status or {
            "phase": str(Phase.PENDING), "ready": False, "restarts": 0, "reason": None, "exit_code": None,
            "started_at": None, "app_pid": None, "app_start": None,
        }
        self.thread = threading.Thread(target=self._main, name=f"supervise-{self.name}", daemon=True)
        self.adopting = status is not None

    @property
    def secrets(self) -> dict[str, str]:
        """The secret values this instance runs with (a copy), for an exec the agent runs in it."""
        return dict(self._secrets)

    # --- reporting -------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        return redact(text, self._secrets.values())

    def publish(self, **changes: Any) -> None:
        if changes.get("reason"):
            changes["reason"] = self.redact(changes["reason"])
        self.status.update(changes)
        write_json(self.dir / "status.json", self.status)

    def event(self, reason: str, message: str, *, warning: bool | None = None) -> None:
        events.record(Path(self.cfg["events"]), self.name, reason, self.redact(message), warning=warning)

    # --- one run ---------------------------------------------------------------------------
    def start(self) -> str | None:
        """Start a run; None when it runs, else why it could not start."""
        try:
            self.container.prepare(Path(self.cfg["image_rootfs"]), self.cfg["oci"])
            pid = self.container.start(Path(self.cfg["shim"]), self._secrets, self.spec.logs.max_size_mb * 1024 * 1024,
                                       self.spec.logs.keep)
        except CairnError as exc:
            return exc.message
        self.run_started = time.monotonic()
        self.publish(phase=str(Phase.STARTING), ready=False, reason=None, started_at=time.time(),
                     app_pid=pid, app_start=start_time(pid))
        self.event("Started", f"Started container {self.container.id} (pid {pid}) at {self.cfg['address']}")
        return None

    def running(self) -> bool:
        return self.container.running()

    def exec(self, command: list[str], timeout_s: float) -> ExecResult:
        return enter.run(self.container, self.cfg["oci"], command, self._secrets, timeout_s=timeout_s)

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as a stop is asked or the run ends."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop_asked.wait(min(TICK_S, max(0.0, deadline - time.monotonic()))) or not self.running():
                return False
        return True

    def run_hook(self, command: list[str], timeout_s: float) -> tuple[bool, str] | None:
        """A hook on a thread; None when a stop or the run's end cut it short."""
        result: list[tuple[bool, str]] = []
        thread = threading.Thread(target=lambda: result.append(probes.exec_command(self.exec, command, timeout_s)), daemon=True)
        thread.start()
        while thread.is_alive():
            if self.stop_asked.is_set() or not self.running():
                return None
            thread.join(TICK_S)
        return result[0]

    def kill(self) -> None:
        self.container.signal(signal.SIGKILL, every_process=True)

    def wait_exit(self, timeout_s: float) -> int | None:
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(TICK_S / 2)
        return self.container.exit_code()

    def _killed(self, reason: str, **status: Any) -> None:
        self.kill()
        self.wait_exit(10)
        self.publish(exit_code=137, reason=reason, **status)

    def supervise(self, *, adopted_ready: bool = False) -> str:
        """Until the run must restart ("restart"), cannot succeed ("failed") or a stop ("stop")."""
        ended = lambda: "stop" if self.stop_asked.is_set() else self.exited()  # noqa: E731
        post_start = self.spec.lifecycle.post_start
        if post_start is not None and not self.adopting:
            outcome = self.run_hook(post_start.exec.command, POST_START_TIMEOUT_S)
            if outcome is None:
                return ended()
            ok, what = outcome
            if not ok:
                self.event("PostStartFailed", f"PostStart hook failed: {what}")
                self.event("Killing", "killing the container: its PostStart hook failed")
                self._killed(f"PostStart hook failed: {what}")
                return "restart"
        self.adopting = False
        health = self.spec.health_check
        if health is None:
            if not self.status["ready"]:
                self.publish(phase=str(Phase.RUNNING), ready=True, reason=None)
                self.event("Ready", "no health check: ready once running and PostStart finished")
            while self.sleep(3600):
                pass
            return ended()
        if not adopted_ready and health.initial_delay_s and not self.sleep(health.initial_delay_s):
            return ended()
        successes = failures = 0
        while True:
            began = time.monotonic()
            ok, what = probes.check(health, self.exec, self.cfg["address"])
            if self.stop_asked.is_set():
                return "stop"
            if not self.running():
                return self.exited()
            if ok:
                successes, failures = successes + 1, 0
                recovered = self.status["phase"] == str(Phase.UNHEALTHY)
                if recovered or (not self.status["ready"] and successes >= health.success_threshold):
                    self.publish(phase=str(Phase.RUNNING), ready=True, reason=None)
                    self.event("Ready", f"health check passed {successes} time(s) in a row")
            else:
                successes, failures = 0, failures + 1
                if self.status["ready"]:
                    self.event("Unhealthy", f"Liveness probe failed: {what}")
                    self.publish(phase=str(Phase.UNHEALTHY), reason=what)
                    if failures >= health.failure_threshold:
                        self.event("Killing", "Container failed its health check, will be restarted")
                        self._killed(what, ready=False)
                        return "restart"
                else:
                    self.event("Unhealthy", f"Readiness probe failed: {what}")
                    self.publish(reason=what)
                    if failures >= health.failure_threshold:
                        reason = f"health check never passed ({failures} failures in a row): {what}"
                        self.event("Failed", reason)
                        self._killed(reason, phase=str(Phase.FAILED), ready=False)
                        return "failed"
            if not self.sleep(max(0.0, health.period_s - (time.monotonic() - began))):
                return ended()

    def exited(self) -> str:
        code = self.wait_exit(5)
        if code is None:  # the shim died without a record (killed): the container went with its pid 1
            code, reason = 137, "its shim (cairn-shim) was killed; the container ended with it"
        elif self.container.oom_kills() > 0:
            code = 137
            reason = f"OOMKilled: used more than its memory limit of {self.spec.memory_mb} MB (exit 137)"
            self.event("OOMKilled", reason)
        else:
            reason = f"Error: exited with code {code}" if code else "Completed: exited with code 0"
        self.publish(ready=False, exit_code=code, reason=reason)
        return "restart"

    # --- the instance's whole life ---------------------------------------------------------
    def _main(self) -> None:
        try:
            self._live()
            self.stop_asked.wait()  # a failed instance stays visible until it is terminated
            self.terminate()
        except Exception as exc:  # the instance must end in a state a person can read, then the error is logged
            self.publish(phase=str(Phase.FAILED), ready=False, reason=f"its supervisor failed: {type(exc).__name__}: {exc}")
            raise

    def _live(self) -> None:
        attempt = 0
        outcome = None
        if self.adopting:
            outcome = self._adopt()
            if outcome is None:
                return
        while not self.stop_asked.is_set():
            if outcome is None:
                failure = self.start()
                if failure:
                    self.event("Failed", failure)
                    self.publish(phase=str(Phase.FAILED), ready=False, reason=failure)
                    return
                if self.spec.logs.files:
                    threading.Thread(target=_collect_files, args=(self, self.container.pid()), daemon=True).start()
                outcome = self.supervise()
            if outcome != "restart":
                return
            if time.monotonic() - self.run_started >= self.base * 60:  # healthy for 10 min: start over
                attempt = 0
            delay = backoff_delay(self.base, attempt)
            attempt += 1
            self.publish(phase=str(Phase.BACKOFF), ready=False, restarts=self.status["restarts"] + 1)
            self.event("BackOff", f"Back-off {delay:g}s restarting failed container ({self.status['reason']})")
            if self.stop_asked.wait(delay):
                return
            outcome = None

    def _adopt(self) -> str | None:
        """Where an instance found by a restarted agent goes on: None when it needs nothing more
        until its stop, else supervise()'s outcome for the run found."""
        phase = self.status.get("phase")
        if phase in (str(Phase.FAILED), "stopped", str(Phase.TERMINATING)):
            return None
        if self.running():
            return self.supervise(adopted_ready=bool(self.status.get("ready")))
        if self.container.exit_code() is None and phase in (str(Phase.PENDING), str(Phase.BACKOFF)):
            self.adopting = False
            return "restart"  # between runs (back-off) or never started: the next run starts now
        outcome = self.exited()
        missing = [n for n in self.cfg.get("secret_names", []) if n not in self._secrets]
        if missing:
            reason = (f"ended while no agent supervised it, and its secret values ({', '.join(missing)}) ended with it; "
                      "the next ensure (retry the order) recreates it")
            self.event("Failed", reason)
            self.publish(phase=str(Phase.FAILED), ready=False, reason=reason)
            return None
        self.adopting = False
        return outcome

    def terminate(self) -> None:
        lifecycle = self.spec.lifecycle
        grace = 0.0 if self.kill_now else lifecycle.termination_grace_period_s
        began = time.monotonic()
        self.publish(phase=str(Phase.TERMINATING), ready=False)
        if self.running():
            if lifecycle.pre_stop is not None and not self.kill_now:
                self.event("PreStop", f"running PreStop hook: {lifecycle.pre_stop.exec.command}")
                self.stop_asked.clear()  # let run_hook wait for the hook itself
                outcome = self.run_hook(lifecycle.pre_stop.exec.command, max(0.1, grace))
                self.stop_asked.set()
                if outcome is not None and not outcome[0]:
                    self.event("FailedPreStop", f"PreStop hook failed: {outcome[1]}")
            remaining = grace - (time.monotonic() - began)
            if self.running() and remaining > 0:
                self.event("Killing", f"Stopping container with SIGTERM ({remaining:.1f}s of the grace period left)")
                self.container.signal(signal.SIGTERM)
                self.wait_exit(remaining)
            if self.running():
                self.event("Killing", f"grace period of {grace:g}s ran out: SIGKILL", warning=True)
                self.kill()
            code = self.wait_exit(10)
            exit_code = 137 if code is None else code
            self.publish(exit_code=exit_code)
            self.event("Stopped", f"Stopped container (exit code {exit_code}) {time.monotonic() - began:.1f}s after the stop began")
        self.container.remove()
        self.publish(phase="stopped", ready=False, app_pid=None)

    # --- what the node calls ---------------------------------------------------------------
    def begin(self) -> Supervisor:
        self.thread.start()
        return self

    def stop(self, *, now: bool) -> None:
        self.kill_now = self.kill_now or now
        self.stop_asked.set()

    def join(self, timeout_s: float) -> bool:
        self.thread.join(timeout_s)
        return not self.thread.is_alive()


def _collect_files(supervisor: Supervisor, pid: int | None, poll_s: float = 1.0) -> None:
    """Copy new lines of the configured log files (read through /proc/PID/root) into the
    container log, each line tagged with its file's path instead of stdout/stderr."""
    from cairn.runtimes.local.logs import append_line

    if pid is None:
        return
    offsets: dict[str, int] = {}
    root = f"/proc/{pid}/root"
    while supervisor.running():
        time.sleep(poll_s)
        for pattern in supervisor.spec.logs.files:
            for path in glob.glob(root + pattern):
                try:
                    with open(path, "rb") as fh:
                        fh.seek(offsets.get(path, 0))
                        data = fh.read()
                        offsets[path] = fh.tell()
                except OSError:
                    continue
                for line in data.decode(errors="replace").splitlines():
                    append_line(supervisor.container.log_path, path[len(root):], supervisor.redact(line))

