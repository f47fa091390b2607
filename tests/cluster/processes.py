"""The components as processes: start one in its own session, know whether it is the very
process we started, wait on a condition while it lives, stop it, find leftovers.

A pid file holds pid and start time (`/var/lib/cairn-k8s/<cluster>/run/<component>.pid`), so a
reused pid is never mistaken for ours.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from layout import cdir, log

# Programs this script starts (directly, or containerd's shims). Leftover hunting only
# ever considers these, so a developer's `tail -f` of one of our logs is left alone.
OUR_PROGRAMS = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                "kube-proxy", "kwok", "containerd", "containerd-shim-runc-v2"}


def _start_time(pid: int) -> str | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces.
    return stat.rpartition(")")[2].split()[19]


def _pidfile(cluster: str, comp: str) -> pathlib.Path:
    return cdir(cluster) / "run" / f"{comp}.pid"


def running_pid(cluster: str, comp: str) -> int | None:
    """The component's pid if the very process we started is alive (pid reuse safe)."""
    try:
        pid_s, start = _pidfile(cluster, comp).read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return None
    if _start_time(pid) != start:
        return None
    try:  # a zombie is not running
        if pathlib.Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0] == "Z":
            return None
    except (OSError, IndexError):
        return None
    return pid


def start(cluster: str, comp: str, argv: list[str], env: dict | None = None) -> int:
    pid = running_pid(cluster, comp)
    if pid:
        return pid
    logdir = cdir(cluster) / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    (cdir(cluster) / "run").mkdir(parents=True, exist_ok=True)
    with open(logdir / f"{comp}.log", "ab") as out:
        out.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
        out.flush()
        # Own session: the component outlives `up` and never gets our terminal's signals.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cdir(cluster),
                                env={**os.environ, **(env or {})})
    _pidfile(cluster, comp).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
    log(f"{cluster}/{comp} started (pid {proc.pid}, log {logdir / (comp + '.log')})")
    return proc.pid


def _log_tail(cluster: str, comp: str, lines: int = 25) -> str:
    try:
        return "\n".join((cdir(cluster) / "logs" / f"{comp}.log").read_text(errors="replace")
                         .splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for(what: str, check: Callable[[], Any], timeout: float, cluster: str | None = None,
             comp: str | tuple | None = None) -> Any:
    """Poll check() until it returns a truthy value; fail early if a component died."""
    comps = (comp,) if isinstance(comp, str) else tuple(comp or ())
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 (any failure means "not yet")
            last_err = e
        for c in comps:
            if not running_pid(cluster, c):
                raise RuntimeError(f"{cluster}/{c} exited while waiting for {what}:\n{_log_tail(cluster, c)}")
        time.sleep(0.5)
    tail = "".join(f"\n--- {cluster}/{c}:\n{_log_tail(cluster, c)}" for c in comps)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_err}){tail}")


def pids_matching(needle: str) -> list[int]:
    """Our programs whose command line mentions one of our own state paths.

    containerd's shims are re-parented away from containerd, so they are found by the
    socket path they were started with, which only this cluster uses.
    """
    pids = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) == os.getpid():
            continue
        try:
            argv = (p / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or os.path.basename(argv[0].decode(errors="replace")) not in OUR_PROGRAMS:
            continue
        if needle in b" ".join(argv).decode(errors="replace"):
            pids.append(int(p.name))
    return pids


def kill(pids: list[int], what: str, grace: float) -> None:
    pids = [p for p in pids if _start_time(p)]
    if not pids:
        return
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    for p in pids:
        if _alive(p):
            log(f"{what}: pid {p} ignored SIGTERM for {grace:.0f}s, sending SIGKILL")
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/status").read_text().split("State:")[1].split()[0]
    except (OSError, IndexError):
        return False
    if state == "Z":
        try:  # our own child (started by this process): reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True


def stop(cluster: str, comp: str, grace: float = 15) -> None:
    pid = running_pid(cluster, comp)
    if pid:
        kill([pid], f"{cluster}/{comp}", grace)
        log(f"{cluster}/{comp} stopped")
    _pidfile(cluster, comp).unlink(missing_ok=True)


def rss_kib(pid: int) -> int:
    try:
        for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
