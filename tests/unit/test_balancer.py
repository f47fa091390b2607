"""The local load balancer on its own: real sockets on loopback, a fake state scan."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cairn.errors import PermanentError
from cairn.runtime import EnvRef
from cairn.runtimes.local.balancer import Balancer, Seen

ENV = EnvRef("c", "app", "production")
OTHER = EnvRef("c", "app", "test")


class Backend:
    """A tiny HTTP server answering its name; ``/slow`` holds the connection for 0.5 s."""

    def __init__(self, name: str) -> None:
        self.name = name
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def do_GET(self) -> None:
                if self.path == "/slow":
                    time.sleep(0.5)
                body = outer.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/") -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), data
    return body.decode()


class Fake:
    """The state directory as the balancer sees it: a list the test edits."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def add(self, name: str, backend_port: int, host_port: int, ready: bool = True, env: EnvRef = ENV) -> None:
        self.seen = [s for s in self.seen if s.key != name]
        self.seen.append(Seen(key=name, env=env, name=name, address="127.0.0.1", ready=ready, ports={host_port: backend_port}))

    def remove(self, name: str) -> None:
        self.seen = [s for s in self.seen if s.key != name]


def wait_until(check, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def fake() -> Fake:
    return Fake()


@pytest.fixture
def balancer(fake: Fake) -> Iterator[Balancer]:
    b = Balancer(lambda: list(fake.seen), policy="round-robin")
    b.start()
    yield b
    b.stop()


def states(b: Balancer, env: EnvRef = ENV) -> dict[str, str]:
    view = b.snapshot(env)
    return {row.instance: row.state for lis in view.listeners for row in lis.backends}


def test_routes_only_to_ready_backends_and_balances(fake: Fake, balancer: Balancer) -> None:
    one, two, three = Backend("one"), Backend("two"), Backend("three")
    port = free_port()
    fake.add("one", one.port, port)
    fake.add("two", two.port, port)
    fake.add("three", three.port, port, ready=False)
    wait_until(lambda: states(balancer) == {"one": "ready", "two": "ready", "three": "out"})
    answers = [get(port) for _ in range(20)]
    assert sorted(set(answers)) == ["one", "two"] and abs(answers.count("one") - 10) <= 1, answers
    fake.add("one", one.port, port, ready=False)  # a readiness flip: out of rotation within a scan
    wait_until(lambda: states(balancer)["one"] == "out")
    assert {get(port) for _ in range(6)} == {"two"}
    view = balancer.snapshot(ENV)
    assert view.counts == "connections" and view.listeners[0].connections == 26
    for b in (one, two, three):
        b.close()


def test_a_refused_connect_is_retried_on_another_backend(fake: Fake, balancer: Balancer) -> None:
    alive = Backend("alive")
    port = free_port()
    fake.add("dead", free_port(), port)  # ready on paper, nothing listens
    fake.add("alive", alive.port, port)
    wait_until(lambda: len(states(balancer)) == 2)
    assert [get(port) for _ in range(6)] == ["alive"] * 6
    dead = next(r for r in balancer.snapshot(ENV).listeners[0].backends if r.instance == "dead")
    assert dead.refused is not None and dead.refused >= 3
    alive.close()


def test_drain_stops_new_connections_and_waits_for_open_ones(fake: Fake, balancer: Balancer) -> None:
    a, b = Backend("a"), Backend("b")
    port = free_port()
    fake.add("a", a.port, port)
    wait_until(lambda: states(balancer) == {"a": "ready"})
    slow: list[str] = []
    thread = threading.Thread(target=lambda: slow.append(get(port, "/slow")))
    thread.start()
    wait_until(lambda: balancer.snapshot(ENV).listeners[0].open == 1)
    fake.add("b", b.port, port)
    wait_until(lambda: states(balancer).get("b") == "ready")
    began = time.monotonic()
    drained = balancer.drain("a", timeout_s=5)
    assert drained["open_at_start"] == 1 and drained["open_left"] == 0, drained
    assert 0.2 < time.monotonic() - began < 5, "waited for the open request, not the whole 5 s bound"
    thread.join()
    assert slow == ["a"], "the open request finished on the draining backend"
    assert states(balancer)["a"] == "draining"
    assert {get(port) for _ in range(4)} == {"b"}
    time.sleep(0.3)  # scans do not put a draining backend back
    assert states(balancer)["a"] == "draining"
    fake.remove("a")
    balancer.forget("a")
    assert states(balancer) == {"b": "ready"}
    a.close()
    b.close()


def test_claim_refuses_a_taken_port_and_another_envs_port(fake: Fake, balancer: Balancer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PermanentError, match=f"host_port {port}.*cannot be used"):
            balancer.claim(ENV, [port])
    assert balancer.snapshot(ENV).listeners == (), "nothing left half-made"
    mine = free_port()
    release = balancer.claim(ENV, [mine])
    with pytest.raises(PermanentError, match="already the traffic port of app/production"):
        balancer.claim(OTHER, [mine])
    release()
    wait_until(lambda: balancer.snapshot(ENV).listeners == ())  # no instance uses it: closed again


def test_no_ready_backend_waits_for_one(fake: Fake, balancer: Balancer) -> None:
    late = Backend("late")
    port = free_port()
    fake.add("late", late.port, port, ready=False)
    wait_until(lambda: states(balancer) == {"late": "out"})
    threading.Timer(0.4, lambda: fake.add("late", late.port, port)).start()
    assert get(port) == "late"
    late.close()


def test_a_new_balancer_finds_listeners_and_backends_again(fake: Fake) -> None:
    a = Backend("a")
    port = free_port()
    fake.add("a", a.port, port)
    for _ in range(2):  # as an agent restart does: a fresh balancer from the same state
        b = Balancer(lambda: list(fake.seen))
        b.start()
        wait_until(lambda: states(b) == {"a": "ready"})  # noqa: B023
        assert get(port) == "a"
        b.stop()
    a.close()


def test_least_connections_avoids_a_busy_backend(fake: Fake) -> None:
    a, b = Backend("a"), Backend("b")
    port = free_port()
    fake.add("a", a.port, port)
    fake.add("b", b.port, port)
    lb = Balancer(lambda: list(fake.seen))
    lb.start()
    try:
        wait_until(lambda: states(lb) == {"a": "ready", "b": "ready"})
        slow: list[str] = []
        thread = threading.Thread(target=lambda: slow.append(get(port, "/slow")))
        thread.start()
        wait_until(lambda: lb.snapshot(ENV).listeners[0].open == 1)
        fast = [get(port) for _ in range(4)]
        thread.join()
        assert fast == [{"a": "b", "b": "a"}[slow[0]]] * 4, (slow, fast)
    finally:
        lb.stop()
        a.close()
        b.close()
