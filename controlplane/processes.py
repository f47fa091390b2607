"""The platform's processes on this machine: the Prefect server (embedded SQLite), the warm start
server and a worker, each recorded in ``$CAIRN_HOME/platform.json`` by pid and start time
(``cairn.procs``), and the environment every one of them runs in (``prefect_env``).

``lifecycle.up()``/``down()`` put these steps together: ``cairn up``, ``make demo``, the tests and
the benches start the platform that way, so there is one way it runs. Everything lives under
``cairn_home()``: the Prefect home (database, results) is
shared by the server, the worker and the CLI, which is what lets a suspended release resume in a
new process and find its persisted results.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cairn import sync
from cairn.errors import TemporaryError
from cairn.paths import cairn_home, private_dir
from cairn.procs import ProcessRef, listens, stop_group

DEFAULT_PORT = 4200
WORK_POOL = "cairn"


@dataclass(frozen=True)
class ServerInfo:
    url: str
    process: ProcessRef | None  # None: a server that answers at the recorded URL, started by no one we know
    home: Path

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


def prefect_home() -> Path:
    return cairn_home() / "prefect"


def isolation_env() -> dict[str, str]:
    """What keeps a process that imports Prefect to cairn's own platform, whatever else it sets:
    cairn's Prefect home (never the user's ``~/.prefect``), no ephemeral server started behind
    the caller's back when no API is set (Prefect's default profile allows one), and no
    telemetry or analytics calls: they need the internet and print errors without it.
    The names are Prefect 3.9's (``prefect.settings.models``): the server's startup analytics,
    the flow runs' resource metrics, and the SDK's analytics, which honour ``DO_NOT_TRACK``."""
    return {
        "PREFECT_HOME": str(prefect_home()),
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS": "false",
        "DO_NOT_TRACK": "1",
    }


def prefect_env(api_url: str | None = None) -> dict[str, str]:
    """Environment for every process of the platform (server, worker, warm start server, and so
    the flow runs; the CLI and the webhook too): one Prefect home, one API, fast polling, no
    telemetry. The one place these settings are written."""
    env = dict(os.environ)
    env.update(isolation_env())
    env.update(
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


def state_file() -> Path:
    return cairn_home() / "platform.json"


def _read_state() -> dict[str, Any]:
    try:
        return json.loads(state_file().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _write_state(state: dict[str, Any]) -> None:
    private_dir(state_file().parent)
    state_file().write_text(json.dumps(state, indent=2))


def processes() -> dict[str, dict[str, Any]]:
    """What `cairn up` started and whether it still runs: the one reading of the platform's state."""
    state = _read_state()
    server = state.get("server", {})
    url = server.get("url")
    worker, warm = ProcessRef.from_record(state.get("worker")), ProcessRef.from_record(state.get("warm"))
    return {
        "server": {"url": url, "healthy": bool(url and _ours(server) and healthy(url)), "host": server.get("host", "127.0.0.1"),
                   "auth": bool(server.get("auth"))},
        "worker": {"pid": worker.pid if worker else None, "running": bool(worker and worker.alive())},
        "warm_start": {"pid": warm.pid if warm else None, "running": bool(warm and warm.alive()),
                       "socket": str(warm_socket())},
    }


def recorded_api() -> str | None:
    """The API URL of the server ``cairn up`` started under this ``$CAIRN_HOME``, while that
    server runs (it may not answer yet, or any more)."""
    server = _read_state().get("server", {})
    url = server.get("url")
    return url if isinstance(url, str) and url and _ours(server) else None


def _ours(server: dict[str, Any]) -> bool:
    """Whether the recorded server still runs (and not some process that got its pid since).
    A record without a start time (a state file from before they were recorded) is judged by its
    URL alone."""
    if "start" not in server:
        return True
    ref = ProcessRef.from_record(server)
    return bool(ref and ref.alive())


def warm_socket() -> Path:
    return cairn_home() / "warm.sock"


def healthy(url: str) -> bool:
    """Whether a Prefect server answers ``/health`` at ``url``. The standard library's http.client:
    every cairn command asks this before it runs, and importing httpx and building its client cost
    more than a whole ``cairn release list`` may take (see ``cairn.blocks.api``)."""
    try:
        parts = urlsplit(url)
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        connection = kind(parts.hostname or "", parts.port, timeout=2)
    except ValueError:  # a port out of range or not a number
        return False
    try:
        connection.request("GET", parts.path.rstrip("/") + "/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def free_port(preferred: int = DEFAULT_PORT) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def ensure_server(port: int | None = None, timeout_s: float = 90, host: str = "127.0.0.1") -> ServerInfo:
    """Reuse the server ``cairn up`` started, else start one (SQLite under the Prefect home).

    The server requires basic auth, on loopback too (see ``auth``): one is generated if none is set."""
    from cairn.controlplane import auth

    state = _read_state()
    server = state.get("server", {})
    if server.get("url") and _ours(server) and healthy(server["url"]):
        if not server.get("auth"):
            raise TemporaryError(f"the server at {server['url']} runs without API auth (started by an older cairn)",
                                 hint="restart it: `cairn down`, then `cairn up`")
        if not auth.is_loopback(host) and auth.is_loopback(server.get("host", "127.0.0.1")):
            raise TemporaryError(f"a server listening on loopback only already runs at {server['url']}",
                                 hint="stop it with `cairn down`, then `cairn up --host ...` again")
        return ServerInfo(server["url"], ProcessRef.from_record(server), prefect_home())
    auth.ensure()
    port = port or free_port()
    # Local clients reach a wildcard listener through loopback; a specific address as it is.
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') or auth.is_loopback(host) else host}:{port}/api"
    private_dir(prefect_home())
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
    ref = ProcessRef.of(proc.pid)
    deadline = time.monotonic() + timeout_s
    # Healthy *and* ours: another server holding the port (a user's own Prefect, another cairn
    # home's) answers /health as well, and would be taken for this one while ours fails to bind.
    while not (ref and listens(ref, port) and healthy(url)):
        if proc.poll() is not None:
            raise TemporaryError(f"the Prefect server exited with {proc.returncode}"
                                 + (f" (port {port} is taken by another server)" if healthy(url) else ""),
                                 hint=f"see {cairn_home() / 'server.log'}; `cairn up --port P` takes another port")
        if time.monotonic() > deadline:
            raise TemporaryError(f"the Prefect server did not answer within {timeout_s:.0f}s", hint=f"see {cairn_home() / 'server.log'}")
        time.sleep(0.2)
    state["server"] = {"url": url, **(ref.record() if ref else {}), "host": host, "auth": True}
    _write_state(state)
    return ServerInfo(url, ref, prefect_home())


def stop_process_group(process: ProcessRef | int | None, timeout_s: float = 15) -> None:
    """SIGTERM the group, then SIGKILL: an idle worker may ignore the first SIGTERM for tens of
    seconds. A bare pid names the process running as it now (a caller that just read it)."""
    stop_group(ProcessRef.of(process) if isinstance(process, int) else process, timeout_s)


def stop_server() -> None:
    state = _read_state()
    stop_process_group(ProcessRef.from_record(state.get("server")))
    state.pop("server", None)
    _write_state(state)


# How long a stop waits for the runs it stopped to leave: a hot-paused order suspends itself
# (flows.approval), which takes the server a few requests.
RUNS_LEAVING_S = 30.0


def stop_worker() -> None:
    """Stop the worker, wait for the flow runs it ran to leave, then stop the warm start server.
    The runs are the warm server's children, each in a session of its own: the worker's stop
    reaches them through their clients, and they must be gone before the server stops, or a
    hot-paused one could not record its suspend (it would stay Paused with no process)."""
    state = _read_state()
    warm = ProcessRef.from_record(state.get("warm"))
    runs = _runs_of(warm)
    stop_process_group(ProcessRef.from_record(state.get("worker")))
    deadline = time.monotonic() + RUNS_LEAVING_S
    while any(r.alive() for r in runs) and time.monotonic() < deadline:
        time.sleep(0.1)
    stop_process_group(warm)
    for name in ("worker", "warm"):
        state.pop(name, None)
    _write_state(state)


def _runs_of(warm: ProcessRef | None) -> list[ProcessRef]:
    """The flow runs forked from the warm start server, as they run now."""
    import psutil

    if warm is None or not warm.alive():
        return []
    try:
        children = psutil.Process(warm.pid).children()
    except psutil.NoSuchProcess:
        return []
    return [ref for ref in (ProcessRef.of(c.pid) for c in children) if ref is not None]


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


# What a flow run's job variables may not set: the worker (root on a node) would run that command,
# in that environment or directory, for whoever can create a flow run.
LOCKED_VARIABLES = {"command", "env", "working_dir"}


def locked_job_template(template: dict[str, Any], command: str) -> dict[str, Any]:
    """The work pool's base job template with the worker's command and environment fixed.

    Runs start through the warm start client (warmstart.py, which falls back to a cold start).
    ``command``, ``env`` and ``working_dir`` leave the variables a deployment or a run may set and
    the job configuration's placeholders; ``additionalProperties: false`` makes the server
    refuse (422) a run that asks for them. A run created past that check (``POST /flow_runs``
    validates nothing) still changes nothing: the worker fills a run's values into placeholders
    only, the command is a constant, and ``env`` and ``working_dir`` are absent, so the job
    configuration's defaults (none added, a temporary directory) hold. Absent, not ``{}``: the
    worker merges a run's ``env`` into a job configuration's ``env`` that is a mapping."""
    variables = {**template["variables"], "additionalProperties": False,
                 "properties": {k: v for k, v in template["variables"]["properties"].items() if k not in LOCKED_VARIABLES}}
    configuration = {k: v for k, v in template["job_configuration"].items() if k not in LOCKED_VARIABLES}
    return {**template, "variables": variables, "job_configuration": {**configuration, "command": command}}


def ensure_deployments(max_running: int | None = None) -> dict[str, str]:
    """Create the work pool and the deployments cairn's flows run from (idempotent).

    The pool's concurrency limit is how many runs run at once; the others wait, Scheduled, for a
    slot (Prefect counts Pending and Running runs: paused and suspended ones hold none).
    It is Prefect's own setting, so it can be changed in the UI or with ``prefect work-pool
    set-concurrency-limit``; ``cairn up`` leaves a changed one alone unless ``max_running`` is given."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.flows import Flow
    from prefect.workers.process import ProcessWorker

    from cairn.controlplane import warmstart

    template = locked_job_template(ProcessWorker.get_default_base_job_template(), warmstart.command(str(warm_socket())))
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
        flow = sync.result(Flow.from_source(source=str(root), entrypoint=entrypoint))
        # deploy() prints a table meant for its own CLI; keep cairn's stdout clean (--json).
        with contextlib.redirect_stdout(io.StringIO()):
            ids[name] = str(flow.deploy(name=name, work_pool_name=WORK_POOL, print_next_steps=False, build=False, push=False,
                                        ignore_warnings=True))
    from cairn.orders.events import ensure_release_automation  # the webhook's event -> a release run

    ensure_release_automation(ids["release"])
    return ids


def ensure_worker(api_url: str) -> ProcessRef:
    """A process worker for cairn's pool; flows run in processes it starts, which outlive `cairn` itself."""
    ensure_warm_start(api_url)
    # The worker's own limit counts processes, hot-paused runs included (they wait for an approval
    # using no CPU): it stays high, and the pool's concurrency limit (ensure_deployments) is what
    # keeps the running ones to what the cores can take.
    argv = ["-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "100"]
    worker = _ensure_process("worker", argv, api_url)
    # Orders whose hot pause died with the processes of an earlier platform (SIGKILL, a crash)
    # become suspends, which a resume hands to this worker (orders.hot_pauses).
    from cairn.orders import hot_pauses

    hot_pauses.suspend_orphans()
    return worker


def ensure_warm_start(api_url: str) -> ProcessRef:
    """The warm start server (warmstart.py): flow runs fork from it instead of importing Prefect anew."""
    return _ensure_process("warm", ["-m", "cairn.controlplane.warmstart", "serve", str(warm_socket())], api_url)


def _ensure_process(name: str, argv: list[str], api_url: str) -> ProcessRef:
    """Start ``python argv`` as the platform's process ``name`` unless it runs; its own session, so
    it outlives the command that started it; logged to ``<name>.log`` in cairn's home."""
    state = _read_state()
    running = ProcessRef.from_record(state.get(name))
    if running and running.alive():
        return running
    log = (cairn_home() / f"{name}.log").open("ab")
    proc = subprocess.Popen([sys.executable, *argv], env=prefect_env(api_url), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    ref = ProcessRef.of(proc.pid)
    if ref is None:
        raise TemporaryError(f"the platform's {name} exited at once with {proc.wait()}", hint=f"see {cairn_home() / f'{name}.log'}")
    state[name] = ref.record()
    _write_state(state)
    return ref
