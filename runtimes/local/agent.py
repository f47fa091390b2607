"""The local node agent: a daemon serving the Runtime protocol over a unix socket.

Like a kubelet it owns the node's instances, but it keeps no state in memory: every request is
answered from the state directory and the per-instance shims, so the agent can be killed and
restarted at any time and re-adopts every running instance as it finds them.

Run as ``python -m cairn.runtimes.local.agent --state-dir DIR`` (``control.start_agent`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from cairn.errors import CairnError, NotFound, PermanentError, TemporaryError
from cairn.revision import Revision
from cairn.runtime import EnvRef, Instance
from cairn.runtimes.local import cgroups, events, logs, netns, traffic
from cairn.runtimes.local.node import Node
from cairn.runtimes.local.state import EnvDir, process_start_time

STATUS_CODES: dict[type[CairnError], int] = {NotFound: 404, PermanentError: 422, TemporaryError: 503}


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # socketserver's default backlog is 5: with tens of releases polling at once, a unix socket
    # refuses the surplus connects at once (EAGAIN), which clients report as "agent not reachable".
    request_queue_size = 256

    def __init__(self, path: Path, node: Node) -> None:
        self.node = node
        self.socket_path = path
        super().__init__(str(path), Handler)


def _env(data: dict[str, Any]) -> EnvRef:
    return EnvRef(cluster=data["cluster"], app=data["app"], environment=data["environment"])


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence per-request lines
        pass

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body: dict[str, Any] = {}
        if method == "POST":
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
        try:
            if url.path == "/logs":
                return self._logs(query)
            result = self._route(method, url.path, query, body)
            self._reply(200, result)
        except CairnError as exc:
            code = next((c for kind, c in STATUS_CODES.items() if isinstance(exc, kind)), 500)
            self._reply(code, exc.to_dict())
        except Exception as exc:  # noqa: BLE001 - the agent must answer, not die
            traceback.print_exc()
            self._reply(500, {"error": "PermanentError", "message": f"agent error: {type(exc).__name__}: {exc}", "hint": "see agent.log"})

    def do_GET(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _route(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> Any:
        node = self.server.node
        if path == "/status":
            return status(self.server)
        if path == "/observe":
            return [i.to_dict() for i in node.observe(_env(query))]
        if path == "/traffic":
            return node.traffic(_env(query))
        if path == "/events":
            since = float(query["since"]) if query.get("since") else None
            found = events.read(EnvDir.of(node.state, _env(query)).events, instance=query.get("instance"), since=since)
            return [e.to_dict() for e in found]
        if method != "POST":
            raise NotFound(f"no such endpoint {method} {path}")
        env = _env(body["env"]) if "env" in body else None
        if path == "/ensure" and env:
            revision = Revision.model_validate(body["revision"])
            node.ensure(env, body["slots"], revision, body.get("secrets") or {}, bool(body.get("replace_failed")), body.get("order"))
            return {"ok": True}
        if path == "/observe_slots" and env:
            unless = body.get("unless")
            found = node.observe_slots(env, body["slots"], None if unless is None else [Instance.from_dict(i) for i in unless],
                                       float(body.get("wait_s") or 0.0))
            return [i.to_dict() for i in found]
        if path == "/terminate" and env:
            node.terminate(env, body["slots"])
            return {"ok": True}
        if path == "/exec" and env:
            result = node.exec(env, body["instance"], body["command"], body["user"], float(body.get("timeout_s", 60)))
            return {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}
        if path == "/enter" and env:
            return {"pid": node.enter(env, body["instance"], body["command"], body["user"])}
        if path == "/purge":
            return {"purged": node.purge()}
        if path == "/shutdown":
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return {"ok": True}
        raise NotFound(f"no such endpoint {method} {path}")

    def _logs(self, query: dict[str, str]) -> None:
        node = self.server.node
        path = node.log_path(_env(query), query["instance"])
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        tail = int(query["tail"]) if query.get("tail") else None
        follow = query.get("follow") == "1"
        try:
            for line in logs.read(path, tail=tail, follow=follow, alive=lambda: path.parent.exists()):
                self.wfile.write((line + "\n").encode())
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass


def status(server: Server) -> dict[str, Any]:
    problem = cgroups.problem()
    return {
        "running": True, "pid": os.getpid(), "socket": str(server.socket_path), "state_dir": str(server.node.state),
        "instances": server.node.count(), "cgroups": problem is None, "cgroups_problem": problem,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cairn local node agent")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--daemon", action="store_true", help="detach: the caller gets its exit at once, not a zombie later")
    args = parser.parse_args(argv)
    if args.daemon and os.fork():
        os._exit(0)
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    sock = state / "agent.sock"
    sock.unlink(missing_ok=True)  # left by an agent that was killed
    netns.ensure_bridge()
    problem = cgroups.problem()
    if problem:
        print(f"WARNING: {problem}", file=sys.stderr, flush=True)
    balancer = traffic.balancer(state)
    balancer.start()  # listeners of adopted instances come back with its first scan
    node = Node(state, balancer)
    node.finish_retiring()  # replaced instances an earlier agent had begun to stop
    server = Server(sock, node)
    os.chmod(sock, 0o600)
    (state / "agent.pid").write_text(f"{os.getpid()} {process_start_time(os.getpid())}")  # pid + start: never a reused pid
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"cairn agent {os.getpid()} serving {sock}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        balancer.stop()
        sock.unlink(missing_ok=True)
        (state / "agent.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
