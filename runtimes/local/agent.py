"""The local node agent: a daemon serving the Runtime protocol over a unix socket.

Like a kubelet it owns the node's instances, but it keeps no state in memory: every request is
answered from the state directory, runc and the per-container shims, so the agent can be killed
and restarted at any time and re-adopts every instance as it finds them (``Node.adopt``): the
containers never notice. Each instance's supervision (probes, hooks, restarts) is a thread here.

The API (routes.py) is a Starlette app; uvicorn serves it on ``agent.sock`` in the state
directory, on a socket this module binds with mode 0600 before uvicorn listens on it (uvicorn's
own ``uds=`` would listen first and then chmod the socket to 0666: a root agent's socket must
never be open to other users, not even for an instant). HTTP/1.1 keeps the client's connections
alive between calls. Only the agent process imports this module and routes.py: the client
never loads Starlette or uvicorn (see the package's lazy ``__init__``).

Run as ``python -m cairn.runtimes.local.agent --state-dir DIR`` (``control.start_agent`` does).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

import uvicorn

from cairn.procs import start_time
from cairn.runtimes.local import binaries, cgroups, netns, routes, traffic
from cairn.runtimes.local.node import Node

SOCKET_MODE = 0o600
# Beyond the client's keep-alive (httpx: 5 s), so the client, not the agent, closes an idle
# connection: never one the client is about to reuse.
KEEP_ALIVE_S = 30
# Requests still running when the agent stops (an ensure, a terminate) get this long; long polls
# and followed logs answer at once (Node.close, Agent.stopping). Below control.stop_agent's 10 s.
GRACEFUL_S = 5


def bind(path: Path) -> socket.socket:
    """The agent's socket at ``path``, bound but not listening, with its final mode already: a
    connect needs a listening socket, so no one reaches the agent before the mode is set."""
    path.unlink(missing_ok=True)  # left by an agent that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="cairn local node agent")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--daemon", action="store_true", help="detach: the caller gets its exit at once, not a zombie later")
    args = parser.parse_args(argv)
    if args.daemon and os.fork():
        os._exit(0)
    state: Path = args.state_dir
    state.mkdir(parents=True, exist_ok=True)
    path = state / "agent.sock"
    netns.ensure_bridge()
    problem = cgroups.problem()
    if problem:
        print(f"WARNING: {problem}", file=sys.stderr, flush=True)
    balancer = traffic.balancer(state)
    balancer.start()  # listeners of adopted instances come back with its first scan
    node = Node(state, balancer)
    binaries.shim_binary(state)  # built once here (a compiler run), not on an instance's path
    adopted = node.adopt()  # supervision goes on where an earlier agent left each instance
    retired = node.finish_retiring()  # replaced instances an earlier agent had begun to stop
    if adopted or retired:
        print(f"adopted {adopted} instance(s); finishing the stop of {retired}", file=sys.stderr, flush=True)
    stopping = threading.Event()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            stopping.set()  # followed logs end at their next read
            node.close()  # long polls answer now
            await super().shutdown(sockets)

    def stop(*_: object) -> None:
        server.should_exit = True

    agent = routes.Agent(node=node, socket=path, stop=stop, stopping=stopping)
    server = Server(uvicorn.Config(
        routes.app(agent), lifespan="on", log_level="warning", access_log=False, server_header=False,
        date_header=False, timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_S))
    listener = bind(path)
    (state / "agent.pid").write_text(f"{os.getpid()} {start_time(os.getpid())}")  # pid + start: never a reused pid
    # uvicorn answers SIGTERM itself while it serves, then raises it again once it stopped: this
    # handler makes that second one (and one before serving began) a stop, not a kill mid-cleanup.
    signal.signal(signal.SIGTERM, stop)
    print(f"cairn agent {os.getpid()} serving {path}", file=sys.stderr, flush=True)
    try:
        server.run(sockets=[listener])
    finally:
        balancer.stop()
        path.unlink(missing_ok=True)
        (state / "agent.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
