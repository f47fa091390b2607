"""The platform's processes on this machine: the Prefect server (embedded SQLite) and a worker.

``cairn up`` / ``make demo`` / the tests all start them through here, so there is one way the
platform runs. Everything lives under ``cairn_home()``: the Prefect home (database, results) is
shared by the server, the worker and the CLI, which is what lets a suspended release resume in a
new process and find its persisted results.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from cairn.errors import TemporaryError
from cairn.paths import cairn_home

DEFAULT_PORT = 4200
WORK_POOL = "cairn"


@dataclass(frozen=True)
class ServerInfo:
    url: str
    pid: int | None
    home: Path


def prefect_home() -> Path:
    return cairn_home() / "prefect"


def prefect_env(api_url: str | None = None) -> dict[str, str]:
    """Environment for every process of the platform: one Prefect home, one API, fast polling."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home()),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_API_BLOCKS_REGISTER_ON_START="false",
        PREFECT_UI_ENABLED=env.get("PREFECT_UI_ENABLED", "true"),
        PREFECT_RESULTS_PERSIST_BY_DEFAULT="true",
        PREFECT_LOCAL_STORAGE_PATH=str(prefect_home() / "storage"),
        # The worker polls for runs to start, including resumed suspends: 0.5 s keeps approval latency low.
        PREFECT_WORKER_QUERY_SECONDS=env.get("PREFECT_WORKER_QUERY_SECONDS", "0.5"),
        PREFECT_WORKER_PREFETCH_SECONDS=env.get("PREFECT_WORKER_PREFETCH_SECONDS", "1"),
        PREFECT_LOGGING_TO_API_BATCH_INTERVAL="0.3",
        # SQLite takes one writer at a time and the server answers 503 to a write that lost the
        # race; Prefect's clients retry a 503 with a doubling back-off. Its default of 5 retries
        # (~1 min) let orders fail on a busy platform; 7 (~4 min) lets them wait instead.
        PREFECT_CLIENT_MAX_RETRIES=env.get("PREFECT_CLIENT_MAX_RETRIES", "7"),
        # The triggers service (and with it the actions service) turns a webhook's event into a release.
        PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED="true",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    from cairn.controlplane import auth

    value = auth.configured()
    if value:
        # One string on both sides: the server requires it, its clients (worker, flow runs) send it.
        env[auth.SERVER_SETTING] = env[auth.CLIENT_SETTING] = value
    return env


def _state_file() -> Path:
    return cairn_home() / "platform.json"


def _read_state() -> dict:
    try:
        return json.loads(_state_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(state: dict) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state, indent=2))


def processes() -> dict[str, dict]:
    """What `cairn up` started and whether it still runs: the one reading of the platform's state."""
    state = _read_state()
    server = state.get("server", {})
    url = server.get("url")
    worker_pid = state.get("worker", {}).get("pid")
    warm_pid = state.get("warm", {}).get("pid")
    return {
        "server": {"url": url, "healthy": bool(url and healthy(url)), "host": server.get("host", "127.0.0.1"),
                   "auth": bool(server.get("auth"))},
        "worker": {"pid": worker_pid, "running": _alive(worker_pid)},
        "warm_start": {"pid": warm_pid, "running": _alive(warm_pid), "socket": str(warm_socket())},
    }


def warm_socket() -> Path:
    return cairn_home() / "warm.sock"


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def free_port(preferred: int = DEFAULT_PORT) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def ensure_server(port: int | None = None, timeout_s: float = 90, host: str = "127.0.0.1") -> ServerInfo:
    """Reuse the server ``cairn up`` started, else start one (SQLite under the Prefect home).

    Beyond loopback the server requires basic auth (see ``auth``): one is generated if none is set."""
    from cairn.controlplane import auth

    state = _read_state()
    server = state.get("server", {})
    if server.get("url") and healthy(server["url"]):
        if not auth.is_loopback(host) and auth.is_loopback(server.get("host", "127.0.0.1")):
            raise TemporaryError(f"a server listening on loopback only already runs at {server['url']}",
                                 hint="stop it with `cairn down`, then `cairn up --host ...` again")
        return ServerInfo(server["url"], server.get("pid"), prefect_home())
    auth.ensure(host)
    port = port or free_port()
    # Local clients reach a wildcard listener through loopback; a specific address as it is.
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') or auth.is_loopback(host) else host}:{port}/api"
    prefect_home().mkdir(parents=True, exist_ok=True)
    log = (cairn_home() / "server.log").open("ab")
    env = prefect_env()
    # The UI's API address defaults to PREFECT_API_URL or else port 4200, whatever port it serves
    # on. Beyond loopback a remote browser cannot use 127.0.0.1 or 0.0.0.0: the API is on the UI's
    # own origin, so a relative path.
    env.setdefault("PREFECT_UI_API_URL", url if auth.is_loopback(host) else "/api")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if proc.poll() is not None:
            raise TemporaryError(f"the Prefect server exited with {proc.returncode}", hint=f"see {cairn_home() / 'server.log'}")
        if time.monotonic() > deadline:
            raise TemporaryError(f"the Prefect server did not answer within {timeout_s:.0f}s", hint=f"see {cairn_home() / 'server.log'}")
        time.sleep(0.2)
    state["server"] = {"url": url, "pid": proc.pid, "host": host, "auth": bool(auth.configured())}
    _write_state(state)
    return ServerInfo(url, proc.pid, prefect_home())


def stop_process_group(pid: int | None, timeout_s: float = 15) -> None:
    """SIGTERM the group, then SIGKILL: an idle worker may ignore the first SIGTERM for tens of seconds."""
    if not _alive(pid):
        return
    assert pid is not None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
                if finished:
                    return
            except ChildProcessError:
                if not _alive(pid):
                    return
            time.sleep(0.1)


def stop_server() -> None:
    state = _read_state()
    stop_process_group(state.get("server", {}).get("pid"))
    state.pop("server", None)
    _write_state(state)


def stop_worker() -> None:
    state = _read_state()
    for name in ("worker", "warm"):
        stop_process_group(state.get(name, {}).get("pid"))
        state.pop(name, None)
    _write_state(state)


FLOWS = {
    "release": "flows/release.py:release",
    "rollback": "flows/rollback.py:rollback",
    "retry": "flows/retry.py:retry",
    "build": "flows/build.py:build",
}


def default_max_running() -> int:
    """Flow runs (orders, rollbacks, retries, builds) running at once when none is set: each is a
    Python process using CPU while it runs (a paused one uses none), so the cores set the limit.
    Five per core: on 2 cores, 50 orders started at once drove the load to 50-240 and some failed
    on the server's 503s; 10 at a time, all 50 complete (bench/RESULTS.md, issue 11 item 2).
    ``CAIRN_MAX_RUNNING`` or ``cairn up --max-running`` sets another."""
    return int(os.environ.get("CAIRN_MAX_RUNNING") or 5 * (os.cpu_count() or 2))


def ensure_deployments(max_running: int | None = None) -> dict[str, str]:
    """Create the work pool and the deployments cairn's flows run from (idempotent).

    The pool's concurrency limit is how many runs run at once; the others wait, Scheduled, for a
    slot (Prefect counts Pending and Running runs: paused and suspended ones hold none).
    It is Prefect's own setting, so it can be changed in the UI or with ``prefect work-pool
    set-concurrency-limit``; ``cairn up`` leaves a changed one alone unless ``max_running`` is given."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.flows import Flow

    from prefect.client.schemas.actions import WorkPoolUpdate
    from prefect.workers.process import ProcessWorker

    from cairn.controlplane import warmstart

    # Runs start through the warm start client (warmstart.py), which falls back to a cold start.
    template = ProcessWorker.get_default_base_job_template()
    template["variables"]["properties"]["command"]["default"] = warmstart.command(str(warm_socket()))
    wanted = max_running or (int(os.environ["CAIRN_MAX_RUNNING"]) if os.environ.get("CAIRN_MAX_RUNNING") else None)
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=WORK_POOL, type="process", base_job_template=template,
                                                   concurrency_limit=wanted or default_max_running()))
        except ObjectAlreadyExists:
            pool = client.read_work_pool(WORK_POOL)
            # A pool from before the limit existed (None) gets the default; a set one stays as set.
            limit = wanted or pool.concurrency_limit or default_max_running()
            if pool.base_job_template != template or pool.concurrency_limit != limit:
                client.update_work_pool(WORK_POOL, WorkPoolUpdate(base_job_template=template, concurrency_limit=limit))
    root = Path(__file__).resolve().parents[1]
    ids = {}
    for name, entrypoint in FLOWS.items():
        flow = Flow.from_source(source=str(root), entrypoint=entrypoint)
        # deploy() prints a table meant for its own CLI; keep cairn's stdout clean (--json).
        with contextlib.redirect_stdout(io.StringIO()):
            ids[name] = str(flow.deploy(name=name, work_pool_name=WORK_POOL, print_next_steps=False, build=False, push=False,
                                        ignore_warnings=True))
    from cairn.orders.events import ensure_release_automation  # the webhook's event -> a release run

    ensure_release_automation(ids["release"])
    return ids


def ensure_worker(api_url: str) -> int:
    """A process worker for cairn's pool; flows run in processes it starts, which outlive `cairn` itself."""
    ensure_warm_start(api_url)
    # The worker's own limit counts processes, hot-paused runs included (they wait for an approval
    # using no CPU): it stays high, and the pool's concurrency limit (ensure_deployments) is what
    # keeps the running ones to what the cores can take.
    argv = ["-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "100"]
    return _ensure_process("worker", argv, api_url)


def ensure_warm_start(api_url: str) -> int:
    """The warm start server (warmstart.py): flow runs fork from it instead of importing Prefect anew."""
    return _ensure_process("warm", ["-m", "cairn.controlplane.warmstart", "serve", str(warm_socket())], api_url)


def _ensure_process(name: str, argv: list[str], api_url: str) -> int:
    """Start ``python argv`` as the platform's process ``name`` unless it runs; its own session, so
    it outlives the command that started it; logged to ``<name>.log`` in cairn's home."""
    state = _read_state()
    pid = state.get(name, {}).get("pid")
    if _alive(pid):
        return pid  # type: ignore[no-any-return]
    log = (cairn_home() / f"{name}.log").open("ab")
    proc = subprocess.Popen([sys.executable, *argv], env=prefect_env(api_url), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    state[name] = {"pid": proc.pid}
    _write_state(state)
    return proc.pid
