"""Health checks and lifecycle hooks, each returning (passed, what it got) in words a person acts on.

HTTP checks are made from the node to the instance's address, as the kubelet does; exec checks
and hooks run inside the instance's container (``runc exec``, given as ``run``). Kubernetes' rule for HTTP: any 2xx or 3xx
passes unless an exact status is expected.
"""

from __future__ import annotations

import http.client
import shlex
from collections.abc import Callable, Sequence

from cairn.config import HealthCheck
from cairn.runtime import ExecResult


def _tail(text: str, limit: int = 200) -> str:
    text = " ".join(text.strip().split())
    return text if len(text) <= limit else "..." + text[-limit:]


def http_check(address: str, port: int, path: str, expected: int | None, timeout_s: float) -> tuple[bool, str]:
    what = f"HTTP GET :{port}{path}"
    conn = http.client.HTTPConnection(address, port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"User-Agent": "cairn-probe"})
        response = conn.getresponse()
        body = response.read(512).decode(errors="replace")
    except ConnectionRefusedError:
        return False, f"{what} failed: connection refused (nothing listens on port {port})"
    except TimeoutError:
        return False, f"{what} timed out after {timeout_s:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{what} failed: {exc}"
    finally:
        conn.close()
    ok = response.status == expected if expected is not None else 200 <= response.status < 400
    want = f" (expected {expected})" if expected is not None else ""
    return ok, f"{what} answered {response.status} {_tail(body)!r}{want}".replace("'", '"')


Exec = Callable[[list[str], float], ExecResult]


def exec_command(run: Exec, command: Sequence[str], timeout_s: float) -> tuple[bool, str]:
    result = run(list(command), timeout_s)
    shown = shlex.join(command)
    if result.exit_code == 0:
        return True, f"exec [{shown}] exited 0"
    detail = _tail(result.stderr or result.stdout) or "(no output)"
    return False, f"exec [{shown}] exited {result.exit_code}: {detail}"


def check(health: HealthCheck, run: Exec, address: str) -> tuple[bool, str]:
    if health.http is not None:
        h = health.http
        return http_check(address, h.port, h.path, h.expected_status, health.timeout_s)
    assert health.exec is not None
    return exec_command(run, health.exec.command, health.timeout_s)
