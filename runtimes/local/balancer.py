"""The node's load balancer: one TCP listener per environment and mapped host port (like kube-proxy
plus a Service's endpoints, in the agent process).

It runs an asyncio loop on its own thread, so it keeps proxying while the agent's threads serve
API calls. It parses nothing (HTTP apps work unchanged), so it counts connections, not requests.
Its view of the instances comes from the state directory, re-read every ``SCAN_INTERVAL_S``
(``scan``): a restarted agent re-creates its listeners and re-adopts the backends from state alone.

Backends: ``ready`` (in rotation), ``draining`` (the agent is stopping it: no new connections,
open ones go on) or ``out`` (not ready: starting, unhealthy, failed). A new connection goes to a
ready backend by least open connections (ties round robin), or round robin; a backend that refuses
or does not answer the connect is skipped and the next one tried, since nothing was sent yet.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import PermanentError
from cairn.runtime import BackendState, BackendView, EnvRef, ListenerView, TrafficView

SCAN_INTERVAL_S = 0.1
CONNECT_TIMEOUT_S = 1.0
# A connection that finds no ready backend waits this long for one (e.g. between a batch's old
# instances draining and its new ones being seen ready) before it is closed.
NO_BACKEND_WAIT_S = 10.0
BUFFER = 64 * 1024
POLICIES = ("least-connections", "round-robin")


@dataclass(frozen=True)
class Seen:
    """One instance as the state directory shows it. ``key`` is its directory (unique for its life)."""

    key: str
    env: EnvRef
    name: str
    address: str
    ready: bool
    ports: dict[int, int]  # host port -> container port


@dataclass(eq=False)
class Backend:
    key: str
    name: str
    address: str
    port: int
    state: BackendState = "out"
    open: int = 0
    connections: int = 0
    refused: int = 0

    def view(self) -> BackendView:
        return BackendView(instance=self.name, address=f"{self.address}:{self.port}", state=self.state, open=self.open,
                           connections=self.connections, refused=self.refused)


@dataclass(eq=False)
class Listener:
    env: EnvRef
    port: int
    server: asyncio.AbstractServer | None = None
    error: str | None = None
    backends: dict[str, Backend] = field(default_factory=dict)
    connections: int = 0
    open: int = 0
    dropped: int = 0  # connections closed because no backend could take them
    turn: itertools.count[int] = field(default_factory=itertools.count)


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # REUSEADDR only lets a restarted agent bind past TIME_WAIT; Linux still refuses a port
        # another socket listens on, which is how a taken port is detected.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Balancer:
    def __init__(self, scan: Callable[[], Iterable[Seen]], *, host: str = "127.0.0.1", policy: str = "least-connections") -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown balancing policy {policy!r}; use one of {', '.join(POLICIES)}")
        self.scan, self.host, self.policy = scan, host, policy
        self.loop = asyncio.new_event_loop()
        self.listeners: dict[int, Listener] = {}
        self._draining: set[str] = set()
        self._claims: dict[int, tuple[EnvRef, int]] = {}  # host port -> (env, ensure calls holding it)
        self._epoch = 0  # bumped by drain/forget: a scan begun before them is stale
        self._changed = asyncio.Event()
        self._warned: set[tuple[int, str]] = set()
        self._thread = threading.Thread(target=self._run, name="balancer", daemon=True)

    # --- thread-safe API (the agent's handler threads) -------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Close every listener and the loop (open connections end with it, as with the agent)."""
        if self._thread.is_alive():
            self._call(self._close_all, list(self.listeners))
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)

    def _call(self, fn: Callable[..., Any], *args: Any, timeout: float | None = 10) -> Any:
        async def run() -> Any:
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(timeout)

    def claim(self, env: EnvRef, ports: Iterable[int]) -> Callable[[], None]:
        """Listen on ``ports`` for ``env`` now, before any instance starts, so a taken port fails the
        ensure with nothing started. Returns the release to call when the ensure is over."""
        ports = sorted(set(ports))
        self._call(self._claim, env, ports)
        return lambda: self._call(self._unclaim, ports)

    def drain(self, key: str, timeout_s: float) -> dict[str, Any]:
        """Take the instance out of rotation and wait until its open connections end (at most
        ``timeout_s``). Returns what happened, for the instance's events."""
        return self._call(self._drain, key, timeout_s, timeout=timeout_s + 10)

    def forget(self, key: str) -> None:
        self._call(self._forget, key)

    def snapshot(self, env: EnvRef) -> TrafficView:
        """What ``cairn traffic`` shows of ``env``: its listeners and their backends, counted."""
        return self._call(self._snapshot, env)

    # --- on the loop -----------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._reconcile_forever())
        try:
            self.loop.run_forever()
        finally:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.run_until_complete(asyncio.sleep(0))
            self.loop.close()

    async def _claim(self, env: EnvRef, ports: list[int]) -> None:
        opened: list[int] = []
        for port in ports:
            held = self.listeners.get(port)
            owner = held.env if held else self._claims.get(port, (None, 0))[0]
            if owner is not None and owner != env:
                self._close_all(opened)
                raise PermanentError(
                    f"host_port {port} is already the traffic port of {owner.app}/{owner.environment} on this node",
                    hint="give each environment on a node its own host_port",
                )
            if held is None or held.server is None:
                try:
                    await self._listen(env, port, held)
                except OSError as exc:
                    self._close_all(opened)
                    raise PermanentError(
                        f"host_port {port}: {self.host}:{port} cannot be used on this host: {exc.strerror or exc}",
                        hint="pick a free host_port for this port mapping, or stop what listens there "
                             f"(ss -ltnp 'sport = :{port}')",
                    ) from None
                opened.append(port)
        for port in ports:
            owner, count = self._claims.get(port, (env, 0))
            self._claims[port] = (env, count + 1)

    def _unclaim(self, ports: list[int]) -> None:
        self._epoch += 1  # a scan begun before the ensure created its instances would close the port
        for port in ports:
            env, count = self._claims.get(port, (None, 1))
            if count <= 1:
                self._claims.pop(port, None)
            elif env is not None:
                self._claims[port] = (env, count - 1)

    async def _listen(self, env: EnvRef, port: int, listener: Listener | None) -> None:
        sock = bind(self.host, port)
        listener = listener or Listener(env, port)
        listener.server = await asyncio.start_server(lambda r, w: self._serve(listener, r, w), sock=sock, limit=BUFFER)
        listener.error = None
        self.listeners[port] = listener

    def _close_all(self, ports: list[int]) -> None:
        for port in ports:
            listener = self.listeners.pop(port, None)
            if listener and listener.server:
                listener.server.close()

    async def _drain(self, key: str, timeout_s: float) -> dict[str, Any]:
        self._epoch += 1
        self._draining.add(key)
        began = time.monotonic()
        backends = [b for listener in self.listeners.values() if (b := listener.backends.get(key))]
        for backend in backends:
            backend.state = "draining"
        open_at_start = sum(b.open for b in backends)
        while sum(b.open for b in backends) and time.monotonic() - began < timeout_s:
            await asyncio.sleep(0.01)
        return {"open_at_start": open_at_start, "open_left": sum(b.open for b in backends),
                "waited_s": round(time.monotonic() - began, 3)}

    def _forget(self, key: str) -> None:
        self._epoch += 1
        self._draining.discard(key)
        for listener in self.listeners.values():
            backend = listener.backends.pop(key, None)
            if backend:
                backend.state = "out"  # connections still holding it finish; nothing new goes there

    def _snapshot(self, env: EnvRef) -> TrafficView:
        rows = tuple(
            ListenerView(address=f"{self.host}:{port}", host_port=port, listening=listener.server is not None,
                         error=listener.error, open=listener.open, connections=listener.connections,
                         dropped=listener.dropped,
                         backends=tuple(b.view() for b in sorted(listener.backends.values(), key=lambda b: b.name)))
            for port, listener in sorted(self.listeners.items()) if listener.env == env)
        return TrafficView(cluster=env.cluster, app=env.app, environment=env.environment, policy=self.policy,
                           counts="connections", listeners=rows)

    # --- reconciling with the state directory ----------------------------------------------
    async def _reconcile_forever(self) -> None:
        while True:
            try:
                epoch = self._epoch
                seen = await asyncio.to_thread(lambda: list(self.scan()))
                if epoch == self._epoch:
                    await self._apply(seen)
            except Exception as exc:  # noqa: BLE001 - a bad scan must not stop the traffic
                print(f"balancer: scan failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            await asyncio.sleep(SCAN_INTERVAL_S)

    async def _apply(self, seen: list[Seen]) -> None:
        wanted: dict[int, tuple[EnvRef, list[tuple[Seen, int]]]] = {}
        for inst in seen:
            for host_port, container_port in inst.ports.items():
                env, members = wanted.setdefault(host_port, (inst.env, []))
                if env == inst.env:  # a second environment on one port was refused at ensure
                    members.append((inst, container_port))
        for port, (env, members) in wanted.items():
            listener = self.listeners.get(port)
            if listener is None or (listener.server is None and listener.env == env):
                try:
                    await self._listen(env, port, listener)
                except OSError as exc:  # e.g. after an agent restart another process took the port
                    listener = self.listeners.setdefault(port, Listener(env, port))
                    listener.error = f"cannot listen on {self.host}:{port}: {exc.strerror or exc}"
                    if (port, listener.error) not in self._warned:
                        self._warned.add((port, listener.error))
                        print(f"balancer: {listener.error}", file=sys.stderr, flush=True)
                listener = self.listeners[port]
            if listener.env != env:
                continue
            self._update_backends(listener, members)
        for port in [p for p, lis in self.listeners.items() if p not in wanted and p not in self._claims]:
            listener = self.listeners.pop(port)
            if listener.server:
                listener.server.close()  # open connections go on; only accepting stops
        self._changed.set()
        self._changed = asyncio.Event()

    def _update_backends(self, listener: Listener, members: list[tuple[Seen, int]]) -> None:
        keys = set()
        for inst, container_port in members:
            keys.add(inst.key)
            backend = listener.backends.get(inst.key)
            if backend is None:
                backend = listener.backends[inst.key] = Backend(inst.key, inst.name, inst.address, container_port)
            backend.address, backend.port = inst.address, container_port
            if inst.key in self._draining:
                backend.state = "draining"
            else:
                backend.state = "ready" if inst.ready else "out"
        for key in set(listener.backends) - keys:
            del listener.backends[key]

    # --- one client connection -------------------------------------------------------------
    def _pick(self, listener: Listener, skip: set[str]) -> Backend | None:
        ready = [b for b in listener.backends.values() if b.state == "ready" and b.key not in skip]
        if not ready:
            return None
        start = next(listener.turn) % len(ready)
        rotated = ready[start:] + ready[:start]
        if self.policy == "round-robin":
            return rotated[0]
        return min(rotated, key=lambda b: b.open)

    async def _connect(self, listener: Listener) -> tuple[Backend, asyncio.StreamReader, asyncio.StreamWriter] | None:
        deadline = time.monotonic() + NO_BACKEND_WAIT_S
        skip: set[str] = set()
        while time.monotonic() < deadline:
            backend = self._pick(listener, skip)
            if backend is None:
                skip.clear()  # every ready one refused, or none is ready: wait for the next scan
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), SCAN_INTERVAL_S * 2)
                except TimeoutError:
                    pass
                continue
            backend.open += 1  # counted from the choice on, so least-connections and drain see it
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(backend.address, backend.port, limit=BUFFER), CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError):
                backend.open -= 1
                backend.refused += 1
                skip.add(backend.key)
                continue
            backend.connections += 1
            return backend, reader, writer
        return None

    async def _serve(self, listener: Listener, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        listener.connections += 1
        listener.open += 1
        try:
            found = await self._connect(listener)
            if found is None:
                listener.dropped += 1
                return
            backend, backend_r, backend_w = found
            try:
                await asyncio.gather(_pipe(client_r, backend_w), _pipe(backend_r, client_w))
            finally:
                backend.open -= 1
                _close(backend_w)
        finally:
            listener.open -= 1
            _close(client_w)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(BUFFER):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()  # pass the half-close on: HTTP/1.0 clients and `nc -q` rely on it
    except (ConnectionError, OSError):
        # One side broke: abort the other so its pipe ends too instead of waiting forever.
        writer.transport.abort()


def _close(writer: asyncio.StreamWriter) -> None:
    try:
        writer.close()
    except (ConnectionError, OSError, RuntimeError):
        pass
