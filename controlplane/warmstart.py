"""Warm starts for flow runs: a process with Prefect and cairn's flows imported forks each run.

A flow run the worker starts is a new Python process that spends 1-3 s importing Prefect and
cairn before its first API call; for an order resumed after a suspend, that is most of the
approval latency (issue 5: at most 5 s). So, like a forkserver, ``cairn up`` starts one *warm
server* next to the worker: it imports everything once, then forks a child per run. The work
pool's command is this file run as a tiny client (standard library only, started with ``-S``):

    worker --spawns--> client --socket (env, cwd, stdio fds)--> warm server --fork--> engine child

The client forwards SIGTERM/SIGINT to the child and exits with the child's status, so the worker
sees the client as the run's process. Cancellation still goes through Prefect's control channel,
whose address travels in the environment the client hands over. With no warm server (not started,
crashed, another machine), the client ``exec``s the usual ``python -m prefect.engine``: a cold
start, never a failed one.

The server forks from a single thread (a ``selectors`` loop, no threads), so no lock is held by a
thread that would vanish in the child. A child gets its own session: restarting the warm server
does not end runs in progress.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from typing import Any

_HEADER = struct.Struct("!I")
_STATUS = struct.Struct("!ii")  # (pid or -1, wait status)


def _send(sock: socket.socket, data: bytes, fds: list[int] | None = None) -> None:
    payload = _HEADER.pack(len(data)) + data
    if fds:
        socket.send_fds(sock, [payload], fds)
    else:
        sock.sendall(payload)


def _recv_exact(sock: socket.socket, size: int, fds: list[int] | None = None) -> bytes:
    """Read ``size`` bytes; file descriptors sent along (SCM_RIGHTS) are added to ``fds``."""
    chunks, left = [], size
    while left:
        data, got, _flags, _addr = socket.recv_fds(sock, left, 3)
        if not data:
            raise EOFError
        if fds is not None:
            fds.extend(got)
        else:
            for fd in got:  # none expected: never leak one
                os.close(fd)
        chunks.append(data)
        left -= len(data)
    return b"".join(chunks)


# --- the client: the work pool's command ----------------------------------------------------------
def _cold_start() -> None:
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *sys.argv[2:]])


def _exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def client(socket_path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
        request = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": sys.argv[2:]}).encode()
        _send(sock, request, [0, 1, 2])
        pid, _ = _STATUS.unpack(_recv_exact(sock, _STATUS.size))
    except (OSError, EOFError):
        sock.close()
        _cold_start()
        return
    if pid < 0:  # the server could not fork: start cold rather than fail the run
        _cold_start()
        return
    started = _start_time(pid)  # at once: a child that ends this soon is reported by the server, not waited on below

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        _, status = _STATUS.unpack(_recv_exact(sock, _STATUS.size))
    except (OSError, EOFError):
        # The warm server went away mid-run; the child lives on in its own session. Its final state
        # is the API's to tell: wait for it to end, then step aside.
        import time

        while started is not None and _start_time(pid) == started:  # never a reused pid
            time.sleep(0.5)
        sys.exit(0)
    _exit_like(status)


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (``/proc/PID/stat`` field 22), None once it has exited.
    What ``cairn.procs`` reads through psutil, read by hand: this client runs with ``-S``, without
    site-packages, so that a run's first step costs no imports."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def command(socket_path: str) -> str:
    """The work pool's command: this file, run without site-packages (it needs none)."""
    import shlex

    return shlex.join([sys.executable, "-S", os.path.abspath(__file__), socket_path])


# --- the server -----------------------------------------------------------------------------------
def preload() -> None:
    """Import what every run imports, once (the flows import the tasks, runtimes and blocks)."""
    import importlib

    for module in ("prefect.engine", "prefect.flow_engine", "prefect.task_engine", "prefect.runner",
                   "cairn.flows.release", "cairn.flows.rollback", "cairn.flows.retry", "cairn.flows.build"):
        importlib.import_module(module)
    # The runtimes are imported when a run first reaches a cluster: the kubernetes client alone
    # takes about 1 s (its package resolves its API classes and models lazily).
    from cairn.runtimes.kubernetes.api import preload as preload_kubernetes

    preload_kubernetes()


def _child(conn: socket.socket, listener: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the run's engine process, with the client's stdio, env and cwd."""
    try:
        listener.close()
        conn.close()
        os.setsid()
        for target, fd in zip((0, 1, 2), fds, strict=False):  # a client with fewer open stdio fds: the rest stay the server's
            os.dup2(fd, target)
        # Nothing of the server's (its selector, other runs' connections) leaks into a run.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        import random

        random.seed()  # else every forked run draws the same numbers
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        import runpy
        import warnings

        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()  # the run's environment, not the server's
        _read_ahead(request["argv"][0] if request["argv"] else request["env"].get("PREFECT__FLOW_RUN_ID"))  # as prefect.engine finds it
        sys.argv = ["prefect.engine", *request["argv"]]
        # prefect.engine is preloaded; running it as __main__ again is the point, not a mistake.
        warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package.*", category=RuntimeWarning)
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report it on the run's stderr, then exit non-zero
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _read_ahead(flow_run_id: str | None) -> None:
    """A release's first reads, started while Prefect's engine gets ready (orders.revisions)."""
    if not flow_run_id:
        return
    from cairn.blocks import api
    from cairn.orders.revisions import read_ahead

    api.client.cache_clear()  # its address and credentials are the run's, read from the run's environment
    read_ahead(flow_run_id)


def serve(socket_path: str) -> None:
    import fcntl
    import selectors
    import threading

    # One server per socket: a second one started by a racing `cairn up` leaves at once.
    lock = open(socket_path + ".lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"warm start: another server holds {socket_path}", file=sys.stderr, flush=True)
        return
    preload()
    if threading.active_count() != 1:  # forking would copy a process whose other threads vanish
        print(f"warm start: {threading.active_count()} threads after the imports; runs will start cold",
              file=sys.stderr, flush=True)
        return
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Whoever connects gets a flow run forked as this server's user with the environment it sends:
    # the socket is 0600 from the moment it exists (umask around bind), not chmodded after.
    umask = os.umask(0o177)
    try:
        listener.bind(socket_path)
    finally:
        os.umask(umask)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    running: dict[int, socket.socket] = {}  # child pid -> its client's connection
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"warm start server {os.getpid()} on {socket_path}", file=sys.stderr, flush=True)
    while not stopping:
        for key, _ in selector.select(timeout=0.2):
            if key.fileobj is listener:
                _accept(listener, selector, running)
            else:  # the client closed (e.g. SIGKILLed by the worker): end its run too
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                if conn.recv(1):
                    continue
                selector.unregister(conn)
                pid = next((p for p, c in running.items() if c is conn), None)
                if pid is not None:
                    _signal_session(pid, signal.SIGTERM)
        _reap(selector, running)
    os.unlink(socket_path)


def _accept(listener: socket.socket, selector: object, running: dict[int, socket.socket]) -> None:
    import selectors

    assert isinstance(selector, selectors.BaseSelector)
    conn, _ = listener.accept()
    try:
        conn.settimeout(5)
        fds: list[int] = []  # they arrive with the first bytes
        (size,) = _HEADER.unpack(_recv_exact(conn, _HEADER.size, fds))
        request = json.loads(_recv_exact(conn, size, fds))
        conn.settimeout(None)
    except (OSError, EOFError, ValueError) as exc:
        print(f"warm start: bad request ({type(exc).__name__})", file=sys.stderr, flush=True)
        conn.close()
        return
    try:
        pid = os.fork()
    except OSError:
        conn.sendall(_STATUS.pack(-1, 0))
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:
        _child(conn, listener, request, fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(_STATUS.pack(pid, 0))
    running[pid] = conn
    selector.register(conn, selectors.EVENT_READ)


def _reap(selector: object, running: dict[int, socket.socket]) -> None:
    import selectors

    assert isinstance(selector, selectors.BaseSelector)
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = running.pop(pid, None)
        if conn is None:
            continue
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        try:
            conn.sendall(_STATUS.pack(pid, status))
        except OSError:
            pass
        conn.close()


def _signal_session(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # the child leads its own session and process group
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 2:
        client(sys.argv[1])
    else:
        sys.exit("usage: warmstart.py SOCKET | warmstart.py serve SOCKET")
