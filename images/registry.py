"""A real OCI registry on loopback: Debian's ``docker-registry`` (distribution v2), run by cairn.

Tests and the demo push the project's images here and the local runtime pulls from here, so
both go through the same registry API a user's registry speaks. One registry per state
directory:

    STATE_DIR/config.yml     ours, written at each start (listen address, storage, auth)
    STATE_DIR/storage/       the registry's blobs and repositories (unless storage_dir is given)
    STATE_DIR/registry.json  pid + start time (cairn.procs) + port: a reused pid is never taken as ours
    STATE_DIR/registry.log   the registry's own log

``start`` is idempotent (a running registry of this state directory is returned as is) and
serialised by a lock file, so concurrent test sessions sharing a state directory start one.
"""

from __future__ import annotations

import fcntl
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from cairn.errors import PermanentError, TemporaryError
from cairn.procs import ProcessRef, listens, stop_group

REGISTRY_BIN = Path("/usr/bin/docker-registry")
DEFAULT_PORT = 5000
# Where the demo keeps its registry so pushed images outlive one run (tests use a temp dir).
CACHE_DIR = Path("/var/cache/cairn/registry")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# The Popen of each registry this process started: kept so it is not collected while the
# registry runs (subprocess warns then), and so stop() reaps it rather than leave a zombie.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

# No auth section by default: the registry listens on 127.0.0.1 only, so nothing beyond this
# machine can reach it, and a process on this machine that can reach loopback could as well
# read the storage directory. Delete is enabled so a test (or a user) can remove a moved tag's
# old manifest. ``http.secret`` is left out: it signs upload state across several registry
# replicas, and there is one.
_CONFIG = """\
# Written by cairn (images/registry.py) at each start; edits are overwritten.
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
{auth}"""

_HTPASSWD = """\
auth:
  htpasswd:
    realm: cairn
    path: {path}
"""


@dataclass(frozen=True)
class Running:
    process: ProcessRef
    port: int

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"


def start(
    state_dir: Path,
    *,
    port: int | None = None,
    storage_dir: Path | None = None,
    htpasswd: Path | None = None,
) -> str:
    """Start (or find) this state directory's registry; return its address ``127.0.0.1:PORT``.

    ``port=None`` takes DEFAULT_PORT when it is free, else one the kernel picks; ``port=0``
    always lets the kernel pick (tests, so parallel sessions never collide). ``htpasswd``
    (a bcrypt htpasswd file) turns on basic auth: how tests stand in for a private registry.
    """
    if not REGISTRY_BIN.exists():
        raise PermanentError(f"{REGISTRY_BIN} is missing", hint="apt-get install docker-registry")
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    with _locked(state_dir):
        found = _ours(state_dir)
        if found and (port in (None, 0) or port == found.port):
            return found.url
        if found:
            raise PermanentError(
                f"the registry of {state_dir} already listens on port {found.port}, not {port}",
                hint=f"stop it first (cairn.images.registry.stop({str(state_dir)!r})) or use its port",
            )
        storage = (storage_dir or state_dir / "storage").resolve()
        storage.mkdir(parents=True, exist_ok=True)
        chosen = _pick_port(port)
        auth = _HTPASSWD.format(path=json.dumps(str(htpasswd.resolve()))) if htpasswd else ""
        config = state_dir / "config.yml"
        config.write_text(_CONFIG.format(storage=json.dumps(str(storage)), port=chosen, auth=auth))
        running = _spawn(state_dir, config, chosen)
        (state_dir / "registry.json").write_text(json.dumps({**running.process.record(), "port": running.port}))
        return running.url


def stop(state_dir: Path) -> bool:
    """Stop this state directory's registry if it runs; True if one was stopped. Storage stays."""
    state_dir = state_dir.resolve()
    if not state_dir.exists():
        return False
    with _locked(state_dir):
        found = _ours(state_dir)
        (state_dir / "registry.json").unlink(missing_ok=True)
        if not found:
            return False
        stop_group(found.process, STOP_TIMEOUT_S)  # it leads a session of its own (_spawn)
        child = _CHILDREN.pop(found.process.pid, None)
        if child is not None:
            child.wait(STOP_TIMEOUT_S)  # reaped already by stop_group when ours; this forgets it
        return True


def healthy(state_dir: Path) -> bool:
    """The registry of this state directory runs (pid and start time match) and answers /v2/."""
    found = _ours(state_dir.resolve())
    return found is not None and _answers(found.port)


def address(state_dir: Path) -> str | None:
    """``127.0.0.1:PORT`` of this state directory's running registry, or None."""
    found = _ours(state_dir.resolve())
    return found.url if found else None


def _ours(state_dir: Path) -> Running | None:
    try:
        record = json.loads((state_dir / "registry.json").read_text())
        process, port = ProcessRef.from_record(record), int(record["port"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # pid + start time name the process; its argv names this state directory's config; and it
    # must listen on the recorded port (a registry that lost its port to another is not ours).
    if process is None or not process.alive() or not listens(process, port):
        return None
    try:
        if str(state_dir / "config.yml") not in psutil.Process(process.pid).cmdline():
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return Running(process, port)


def _spawn(state_dir: Path, config: Path, port: int) -> Running:
    log = open(state_dir / "registry.log", "ab")  # handed to the child, closed below once it holds it
    try:
        # A session of its own: the registry outlives the test session or demo that started
        # it only until stop(); it must not get the terminal's Ctrl-C meant for the caller.
        proc = subprocess.Popen(
            [str(REGISTRY_BIN), "serve", str(config)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=state_dir,
            env={"PATH": "/usr/bin:/bin", "HOME": str(state_dir)},
        )
    finally:
        log.close()
    process = ProcessRef.of(proc.pid)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state_dir / "registry.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise TemporaryError(
                f"docker-registry exited with {proc.returncode} on port {port}: {' | '.join(tail)}",
                hint=f"see {state_dir / 'registry.log'}; another process may hold the port",
            )
        if process is not None and _answers(port) and listens(process, port):
            _CHILDREN[proc.pid] = proc
            return Running(process, port)
        time.sleep(0.05)  # polling the condition itself (the API answers), with a deadline
    proc.kill()
    proc.wait(STOP_TIMEOUT_S)
    raise TemporaryError(f"docker-registry did not answer on 127.0.0.1:{port} within {START_TIMEOUT_S:.0f}s",
                         hint=f"see {state_dir / 'registry.log'}")


def _answers(port: int) -> bool:
    try:
        # 401 is an answer too: a registry with htpasswd auth challenges an anonymous /v2/.
        return httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2.0).status_code in (200, 401)
    except httpx.HTTPError:
        return False


def _pick_port(port: int | None) -> int:
    with socket.socket() as sock:
        if port:
            return port
        try:
            if port is None:
                sock.bind(("127.0.0.1", DEFAULT_PORT))
                return DEFAULT_PORT
        except OSError:
            pass
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    with open(state_dir / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def main() -> None:
    """``python -m cairn.images.registry start|stop|status [STATE_DIR]`` (default CACHE_DIR)."""
    import sys

    action = sys.argv[1] if len(sys.argv) > 1 else "status"
    state_dir = Path(sys.argv[2]) if len(sys.argv) > 2 else CACHE_DIR
    if action == "start":
        print(start(state_dir))
    elif action == "stop":
        print("stopped" if stop(state_dir) else "not running")
    elif action == "status":
        url = address(state_dir)
        print(url if url and healthy(state_dir) else "not running")
        raise SystemExit(0 if url else 1)
    else:
        print(f"usage: python -m cairn.images.registry start|stop|status [STATE_DIR]; got {action!r}", file=sys.stderr)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
