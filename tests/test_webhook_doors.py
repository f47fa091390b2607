"""What the webhook answers from the request alone: a body over the limit before it is read, a
request without its signature headers before any lookup. The webhook runs as a process whose
Prefect API does not exist (a closed port): a request that reached for the secret or a run
would be answered 5xx, or not at all, instead of the refusal."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from cairn.controlplane.processes import free_port
from cairn.webhook.server import MAX_BODY
from tests.test_webhook import signed, webhook_process

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def blind_hook() -> Iterator[tuple[str, int]]:
    port, dead = free_port(8789), free_port(8790)  # nothing listens on ``dead``
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{dead}/api"}
    argv = ["-c", f"from cairn.webhook.server import serve; serve('127.0.0.1', {port})"]
    with webhook_process(argv, port, env):
        yield "127.0.0.1", port


def _exchange(address: tuple[str, int], head: str, parts: list[bytes]) -> str:
    """Send the request head and ``parts`` of a body that is never finished; the status line answered.
    The socket's timeout only bounds a hang: a server waiting for the rest answers nothing."""
    with socket.create_connection(address, timeout=30) as sock:
        sock.sendall(head.encode() + b"\r\n")
        for part in parts:
            sock.sendall(part)
        return sock.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def _head(headers: dict[str, str]) -> str:
    return "POST /releases HTTP/1.1\r\nHost: hook\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


_, SIGNED = signed({"app": "a", "environment": "test", "version": "v1"})
UNSIGNED = {k: v for k, v in SIGNED.items() if k != "X-Cairn-Signature"}


@pytest.mark.parametrize("headers,parts,status", [
    pytest.param({**SIGNED, "Content-Length": str(MAX_BODY + 1)}, [], "413",
                 id="a Content-Length over the limit is refused before any of the body is sent"),
    pytest.param({**SIGNED, "Content-Length": str(10**12)}, [b"{"], "413",
                 id="a terabyte announced is refused after its first byte, not read"),
    pytest.param({**SIGNED, "Transfer-Encoding": "chunked"}, [_chunk(b" " * 40_000), _chunk(b" " * 40_000)], "413",
                 id="a chunked body is cut off once it passes the limit, before its end"),
    pytest.param({**UNSIGNED, "Content-Length": "100"}, [], "401",
                 id="a request without a signature is refused before its body is read or anything looked up"),
    pytest.param({**SIGNED, "X-Cairn-Delivery": "", "Content-Length": "100"}, [], "401",
                 id="a request without a delivery id is refused before any lookup"),
    pytest.param({**SIGNED, "X-Cairn-Timestamp": "soon", "Content-Length": "100"}, [], "401",
                 id="a malformed timestamp is refused before any lookup"),
    pytest.param({**SIGNED, "Content-Length": "12abc"}, [], "400",
                 id="a Content-Length that is not a number is refused"),
])
def test_refused_from_the_request_alone(blind_hook: tuple[str, int], headers: dict[str, str], parts: list[bytes], status: str) -> None:
    line = _exchange(blind_hook, _head(headers), parts)
    assert line.split(" ")[1:2] == [status], line
