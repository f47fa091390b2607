"""The agent's HTTP API: the Runtime protocol as JSON routes, a Starlette app (agent.py serves it
with uvicorn on the agent's unix socket; ``client.LocalRuntime`` is its caller).

| route | answers |
|---|---|
| ``GET /status`` | the agent: pid, socket, state directory, instance count, cgroups |
| ``GET /observe?cluster&app&environment`` | ``[Instance.to_dict()]`` |
| ``POST /observe_slots`` ``{env, slots, unless, wait_s}`` | ``[Instance.to_dict()]``, the long poll |
| ``GET /traffic?cluster&app&environment`` | ``TrafficView.to_dict()`` |
| ``GET /events?cluster&app&environment[&instance][&since]`` | ``[Event.to_dict()]`` |
| ``GET /logs?cluster&app&environment&instance[&tail][&follow=1]`` | text, a line each, streamed |
| ``POST /ensure`` ``{env, slots, revision, secrets, replace_failed, order}`` | ``{"ok": true}`` |
| ``POST /terminate`` ``{env, slots}`` | ``{"ok": true}`` |
| ``POST /exec`` ``{env, instance, command, user, timeout_s}`` | ``{exit_code, stdout, stderr}`` |
| ``POST /enter`` ``{env, instance, command, user}`` | ``{"pid"}`` the caller's shell joins |
| ``POST /purge`` | ``{"purged"}``: every instance stopped at once |
| ``POST /shutdown`` | ``{"ok": true}``, then the agent stops |

A ``CairnError`` is answered with its status (``STATUS_CODES``) and ``to_dict()``, which the
client raises again as the same class; an unknown route as ``NotFound``; anything else as a 500
naming it (the traceback goes to agent.log). The node's calls block (files, processes, the
balancer's loop), so each runs in a worker thread and the event loop only moves bytes.
"""

from __future__ import annotations

import json
import os
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from cairn.errors import CairnError, NotFound, PermanentError, TemporaryError
from cairn.images.credentials import Credentials
from cairn.revision import Revision
from cairn.runtime import EnvRef, Instance
from cairn.runtimes.local import cgroups, events, logs
from cairn.runtimes.local.node import Node
from cairn.runtimes.local.state import EnvDir

STATUS_CODES: dict[type[CairnError], int] = {NotFound: 404, PermanentError: 422, TemporaryError: 503}
# Each long poll (up to a minute) and each followed log holds a worker thread while it waits;
# anyio's default of 40 would queue the 41st health wait of a busy node behind the others.
THREADS = 512


@dataclass(frozen=True)
class Agent:
    """What the routes serve: the node, and the agent process around it."""

    node: Node
    socket: Path
    stop: Callable[[], None]
    """Ends the agent (``/shutdown``): the server stops after answering."""
    stopping: threading.Event
    """Set once the agent stops: followed logs end, so the shutdown does not wait on them."""


Query = Mapping[str, str]
Body = dict[str, Any]


def _env(data: Mapping[str, Any]) -> EnvRef:
    return EnvRef(cluster=data["cluster"], app=data["app"], environment=data["environment"])


def status(agent: Agent, _query: Query | None = None, _body: Body | None = None) -> dict[str, Any]:
    problem = cgroups.problem()
    return {
        "running": True, "pid": os.getpid(), "socket": str(agent.socket), "state_dir": str(agent.node.state),
        "instances": agent.node.count(), "cgroups": problem is None, "cgroups_problem": problem,
    }


def _observe(agent: Agent, query: Query, _body: Body) -> Any:
    return [i.to_dict() for i in agent.node.observe(_env(query))]


def _observe_slots(agent: Agent, _query: Query, body: Body) -> Any:
    unless = body.get("unless")
    found = agent.node.observe_slots(_env(body["env"]), body["slots"],
                                     None if unless is None else [Instance.from_dict(i) for i in unless],
                                     float(body.get("wait_s") or 0.0))
    return [i.to_dict() for i in found]


def _traffic(agent: Agent, query: Query, _body: Body) -> Any:
    return agent.node.traffic(_env(query)).to_dict()


def _events(agent: Agent, query: Query, _body: Body) -> Any:
    since = float(query["since"]) if query.get("since") else None
    found = events.read(EnvDir.of(agent.node.state, _env(query)).events, instance=query.get("instance"), since=since)
    return [e.to_dict() for e in found]


def _ensure(agent: Agent, _query: Query, body: Body) -> Any:
    revision = Revision.model_validate(body["revision"])
    login = body.get("pull_login")
    agent.node.ensure(_env(body["env"]), body["slots"], revision, body.get("secrets") or {},
                      bool(body.get("replace_failed")), body.get("order"),
                      Credentials(str(login[0]), str(login[1])) if login else None)
    return {"ok": True}


def _terminate(agent: Agent, _query: Query, body: Body) -> Any:
    agent.node.terminate(_env(body["env"]), body["slots"])
    return {"ok": True}


def _exec(agent: Agent, _query: Query, body: Body) -> Any:
    result = agent.node.exec(_env(body["env"]), body["instance"], body["command"], body["user"],
                             float(body.get("timeout_s", 60)))
    return {"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr}


def _enter(agent: Agent, _query: Query, body: Body) -> Any:
    return agent.node.enter(_env(body["env"]), body["instance"], body["command"], body["user"])


def _purge(agent: Agent, _query: Query, _body: Body) -> Any:
    return {"purged": agent.node.purge()}


def _shutdown(agent: Agent, _query: Query, _body: Body) -> Any:
    agent.stop()
    return {"ok": True}


def _error(exc: CairnError) -> JSONResponse:
    code = next((c for kind, c in STATUS_CODES.items() if isinstance(exc, kind)), 500)
    return JSONResponse(exc.to_dict(), status_code=code)


def _failed(exc: Exception) -> JSONResponse:
    traceback.print_exc()  # the agent must answer, not die; the whole story goes to agent.log
    return JSONResponse({"error": "PermanentError", "message": f"agent error: {type(exc).__name__}: {exc}",
                         "hint": "see agent.log"}, status_code=500)


def _route(path: str, method: str, handler: Callable[[Agent, Query, Body], Any]) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            raw = await request.body() if method == "POST" else b""
            body: Body = json.loads(raw) if raw else {}
            result = await anyio.to_thread.run_sync(handler, request.app.state.agent, dict(request.query_params), body)
        except CairnError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - any failure is an answer, not a dropped connection
            return _failed(exc)
        return JSONResponse(result)

    return Route(path, endpoint, methods=[method])


async def _logs(request: Request) -> Response:
    """The instance's log, a line each; ``follow=1`` streams on until the instance is gone, the
    client goes away or the agent stops (each checked between reads)."""
    agent: Agent = request.app.state.agent
    query = dict(request.query_params)
    try:
        path = await anyio.to_thread.run_sync(agent.node.log_path, _env(query), query["instance"])
        tail = int(query["tail"]) if query.get("tail") else None
    except CairnError as exc:
        return _error(exc)
    except Exception as exc:  # noqa: BLE001 - as in _route
        return _failed(exc)
    gone = threading.Event()  # the client went away: the reading thread stops at its next check

    def alive() -> bool:
        return path.parent.exists() and not gone.is_set() and not agent.stopping.is_set()

    found = logs.batches(path, tail=tail, follow=query.get("follow") == "1", alive=alive)

    async def lines() -> AsyncIterator[str]:
        try:
            # abandon_on_cancel: a client that leaves cancels at once; the thread ends at its next check.
            while (batch := await anyio.to_thread.run_sync(next, found, None, abandon_on_cancel=True)) is not None:
                if batch:
                    yield "".join(line + "\n" for line in batch)
        finally:
            gone.set()

    return StreamingResponse(lines(), media_type="text/plain; charset=utf-8")


async def _no_route(request: Request, _exc: Exception) -> Response:
    return _error(NotFound(f"no such endpoint {request.method} {request.url.path}"))


def app(agent: Agent) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        yield

    routes = [
        _route("/status", "GET", status),
        _route("/observe", "GET", _observe),
        _route("/observe_slots", "POST", _observe_slots),
        _route("/traffic", "GET", _traffic),
        _route("/events", "GET", _events),
        Route("/logs", _logs, methods=["GET"]),
        _route("/ensure", "POST", _ensure),
        _route("/terminate", "POST", _terminate),
        _route("/exec", "POST", _exec),
        _route("/enter", "POST", _enter),
        _route("/purge", "POST", _purge),
        _route("/shutdown", "POST", _shutdown),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Any]] = {404: _no_route, 405: _no_route}
    served = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    served.state.agent = agent
    return served

