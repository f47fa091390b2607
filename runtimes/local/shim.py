"""The per-instance supervisor (like containerd-shim plus the part of the kubelet that owns one pod).

The agent starts one shim per instance, detached in its own session, and hands it the secret
values on stdin. The shim is the parent of the app process: it records exit codes, runs
PostStart, the health check, restarts with back-off and the graceful stop (PreStop, SIGTERM,
SIGKILL at the grace period). It reports through ``status.json`` and the events file only, so
the agent can die and come back without any instance noticing: nothing lost, nothing doubled,
and the secrets stay in this process's memory, never on disk.

Signals: SIGTERM = graceful stop; SIGUSR1 = stop now (purge: SIGKILL, no PreStop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from cairn.config import EnvironmentSpec
from cairn.procs import start_time
from cairn.redaction import redact
from cairn.runtime import Phase
from cairn.runtimes.local import cgroups, events, netns, probes
from cairn.runtimes.local.logs import RotatingLog
from cairn.runtimes.local.state import write_json

NSINIT = Path(__file__).resolve().parent / "nsinit.py"
POST_START_TIMEOUT_S = 120.0


def backoff_delay(base: float, attempt: int) -> float:
    """Kubernetes' crash-loop back-off: base, doubling, capped at 30x base (10 s -> 5 min)."""
    return float(min(base * (2**attempt), base * 30))


class Shim:
    def __init__(self, directory: Path, secrets: dict[str, str]) -> None:
        self.dir = directory
        self.cfg: dict[str, Any] = json.loads((directory / "config.json").read_text())
        self.spec = EnvironmentSpec.model_validate(self.cfg["spec"])
        self.name: str = self.cfg["instance"]
        self._secrets = secrets
        self.stop = threading.Event()
        self.kill_now = False
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {
            "phase": str(Phase.PENDING), "ready": False, "restarts": 0, "reason": None, "exit_code": None,
            "started_at": None, "app_pid": None, "app_start": None,
            "shim_pid": os.getpid(), "shim_start": start_time(os.getpid()),
        }
        logs = self.spec.logs
        self.log = RotatingLog(directory / "logs" / "container.log", logs.max_size_mb * 1024 * 1024, logs.keep)
        self.log.redact = self.redact
        self.base = float(self.cfg.get("backoff_base_s", 10.0))
        self.oom_before = 0  # the cgroup's OOM-kill count when the current run started
        self.run_started = time.monotonic()

    # --- reporting -------------------------------------------------------------------------
    def redact(self, text: str) -> str:
        return redact(text, self._secrets.values())

    def publish(self, **changes: Any) -> None:
        if "reason" in changes and changes["reason"]:
            changes["reason"] = self.redact(changes["reason"])
        self.status.update(changes)
        write_json(self.dir / "status.json", self.status)

    def event(self, reason: str, message: str, *, warning: bool | None = None) -> None:
        events.record(Path(self.cfg["events"]), self.name, reason, self.redact(message), warning=warning)

    # --- one run of the app ----------------------------------------------------------------
    def start(self) -> str | None:
        """Start the app; None when it runs, else why it could not start."""
        env = {**self.cfg["env"], **self._secrets}
        read_fd, write_fd = os.pipe()
        out = subprocess.PIPE if self.spec.logs.stdout else subprocess.DEVNULL
        self.oom_before = cgroups.oom_kills(self.cfg["cgroups"])
        self.proc = subprocess.Popen(
            [sys.executable, "-I", str(NSINIT), str(self.dir / "config.json"), str(write_fd)],
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, pass_fds=(write_fd,), close_fds=True,
        )
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as status_pipe:
            failure = status_pipe.read().decode(errors="replace")
        if failure:
            self.proc.wait()
            return failure
        if self.proc.stdout and self.proc.stderr:
            self.log.pump("stdout", self.proc.stdout)
            self.log.pump("stderr", self.proc.stderr)
        self.run_started = time.monotonic()
        self.publish(
            phase=str(Phase.STARTING), ready=False, reason=None, started_at=time.time(),
            app_pid=self.proc.pid, app_start=start_time(self.proc.pid),
        )
        self.event("Started", f"Started container (pid {self.proc.pid}) at {self.cfg['address']}")
        return None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sleep(self, seconds: float) -> bool:
        """Wait ``seconds``; False as soon as a stop is asked or the app exits."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.stop.wait(min(0.1, max(0.0, deadline - time.monotonic()))) or not self.running():
                return False
        return True

    def run_hook(self, command: list[str], timeout_s: float) -> tuple[bool, str] | None:
        """Run a hook on a thread; None when a stop or the app's exit cut it short."""
        result: list[tuple[bool, str]] = []
        assert self.proc is not None
        pid = self.proc.pid
        thread = threading.Thread(target=lambda: result.append(probes.exec_command(pid, command, timeout_s)), daemon=True)
        thread.start()
        while thread.is_alive():
            if self.stop.is_set() or not self.running():
                return None
            thread.join(0.1)
        return result[0]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        for target in (os.killpg, os.kill):  # the app's session leader is its process group too
            try:
                target(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if sig == signal.SIGKILL:
            cgroups.kill_all(self.cfg["cgroups"])

    def supervise(self) -> str:
        """Run until the app must restart ("restart"), cannot succeed ("failed") or a stop ("stop")."""
        post_start = self.spec.lifecycle.post_start
        if post_start is not None:
            outcome = self.run_hook(post_start.exec.command, POST_START_TIMEOUT_S)
            if outcome is None:
                return "stop" if self.stop.is_set() else self.exited()
            ok, what = outcome
            if not ok:
                self.event("PostStartFailed", f"PostStart hook failed: {what}")
                self.event("Killing", "killing the container: its PostStart hook failed")
                self.kill()
                self.proc.wait()  # type: ignore[union-attr]
                self.publish(exit_code=137, reason=f"PostStart hook failed: {what}")
                return "restart"
        health = self.spec.health_check
        if health is None:
            self.publish(phase=str(Phase.RUNNING), ready=True, reason=None)
            self.event("Ready", "no health check: ready once running and PostStart finished")
            while self.sleep(3600):
                pass
            return "stop" if self.stop.is_set() else self.exited()
        if health.initial_delay_s and not self.sleep(health.initial_delay_s):
            return "stop" if self.stop.is_set() else self.exited()
        successes = failures = 0
        while True:
            began = time.monotonic()
            ok, what = probes.check(health, self.proc.pid, self.cfg["address"])  # type: ignore[union-attr]
            if self.stop.is_set():
                return "stop"
            if not self.running():
                return self.exited()
            if ok:
                successes, failures = successes + 1, 0
                recovered = self.status["phase"] == str(Phase.UNHEALTHY)  # passed again before the threshold
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
                        self.publish(ready=False)
                        self.kill()
                        self.proc.wait()  # type: ignore[union-attr]
                        self.publish(exit_code=137)
                        return "restart"
                else:
                    self.event("Unhealthy", f"Readiness probe failed: {what}")
                    self.publish(reason=what)
                    if failures >= health.failure_threshold:
                        reason = f"health check never passed ({failures} failures in a row): {what}"
                        self.event("Failed", reason)
                        self.kill()
                        self.proc.wait()  # type: ignore[union-attr]
                        self.publish(phase=str(Phase.FAILED), ready=False, reason=reason, exit_code=137)
                        return "failed"
            if not self.sleep(max(0.0, health.period_s - (time.monotonic() - began))):
                return "stop" if self.stop.is_set() else self.exited()

    def exited(self) -> str:
        assert self.proc is not None
        code = self.proc.wait()
        exit_code = 128 - code if code < 0 else code
        if cgroups.oom_kills(self.cfg["cgroups"]) > self.oom_before:
            exit_code = 137
            reason = f"OOMKilled: used more than its memory limit of {self.spec.memory_mb} MB (exit 137)"
            self.event("OOMKilled", reason)
        else:
            reason = f"Error: exited with code {exit_code}" if exit_code else "Completed: exited with code 0"
        self.publish(ready=False, exit_code=exit_code, reason=reason)
        return "restart"

    # --- the instance's whole life ---------------------------------------------------------
    def backoff(self, attempt: int) -> float:
        return backoff_delay(self.base, attempt)

    def main(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            failure = self.start()
            if failure:
                self.event("Failed", failure)
                self.publish(phase=str(Phase.FAILED), ready=False, reason=failure)
                break
            outcome = self.supervise()
            if outcome != "restart":
                break
            if time.monotonic() - self.run_started >= self.base * 60:  # healthy for 10 min: start over
                attempt = 0
            delay = self.backoff(attempt)
            attempt += 1
            self.publish(phase=str(Phase.BACKOFF), ready=False, restarts=self.status["restarts"] + 1)
            self.event("BackOff", f"Back-off {delay:g}s restarting failed container ({self.status['reason']})")
            if self.stop.wait(delay):
                break
        self.stop.wait()  # a failed instance stays visible until it is terminated
        self.terminate()

    def terminate(self) -> None:
        spec = self.spec.lifecycle
        grace = 0.0 if self.kill_now else spec.termination_grace_period_s
        began = time.monotonic()
        self.publish(phase=str(Phase.TERMINATING), ready=False)
        if self.running():
            if spec.pre_stop is not None and not self.kill_now:
                self.event("PreStop", f"running PreStop hook: {spec.pre_stop.exec.command}")
                self.stop.clear()  # let run_hook wait for the hook itself
                outcome = self.run_hook(spec.pre_stop.exec.command, max(0.1, grace))
                self.stop.set()
                if outcome is not None and not outcome[0]:
                    self.event("FailedPreStop", f"PreStop hook failed: {outcome[1]}")
            remaining = grace - (time.monotonic() - began)
            if self.running() and remaining > 0:
                self.event("Killing", f"Stopping container with SIGTERM ({remaining:.1f}s of the grace period left)")
                self.kill(signal.SIGTERM)
                deadline = time.monotonic() + remaining
                while self.running() and time.monotonic() < deadline:
                    time.sleep(0.05)
            if self.running():
                self.event("Killing", f"grace period of {grace:g}s ran out: SIGKILL", warning=True)
                self.kill()
            code = self.proc.wait() if self.proc else 0
            exit_code = 128 - code if code < 0 else code
            self.publish(exit_code=exit_code)
            self.event("Stopped", f"Stopped container (exit code {exit_code}) {time.monotonic() - began:.1f}s after the stop began")
        cgroups.remove(self.cfg["cgroups"])
        netns.delete(Path(self.cfg["run"]["netns"]))
        self.publish(phase="stopped", ready=False, app_pid=None)


def _collect_files(shim: Shim) -> None:
    """Copy new lines of the configured log files (read through /proc/PID/root) into the
    container log, each line tagged with its file's path instead of stdout/stderr."""
    import glob

    offsets: dict[str, int] = {}
    while True:
        time.sleep(1)
        pid = shim.status.get("app_pid")
        if not pid or not shim.running():
            continue
        root = f"/proc/{pid}/root"
        for pattern in shim.spec.logs.files:
            for path in glob.glob(root + pattern):
                try:
                    with open(path, "rb") as fh:
                        fh.seek(offsets.get(path, 0))
                        data = fh.read()
                        offsets[path] = fh.tell()
                except OSError:
                    continue
                for line in data.decode(errors="replace").splitlines():
                    shim.log.write(path[len(root):], line)


def main() -> None:
    directory = Path(sys.argv[1])
    secrets: dict[str, str] = json.loads(sys.stdin.read() or "{}")
    # Detach twice: the agent reaps the first child at once and the shim outlives the agent.
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    log = os.open(directory / "shim.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    shim = Shim(directory, secrets)

    def on_signal(signum: int, _frame: object) -> None:
        shim.kill_now = shim.kill_now or signum == signal.SIGUSR1
        shim.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    shim.publish()
    if shim.spec.logs.files:
        threading.Thread(target=_collect_files, args=(shim,), daemon=True).start()
    shim.main()


if __name__ == "__main__":
    main()
