"""Streams into a pod: one-off commands and interactive shells (the exec API), and logs."""

from __future__ import annotations

import os
import queue
import select
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import yaml

from cairn.runtime import ExecResult

TIMED_OUT = 124  # what coreutils' timeout(1) returns


def _exit_code(client: Any) -> int:
    """The command's exit code from the exec API's error channel."""
    raw = client.read_channel(3)
    if not raw:
        return 0 if not client.is_open() else -1
    status = yaml.safe_load(raw) or {}
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", 1))
    # The command could not start (not found, not executable): a shell would answer 126/127.
    return 127 if "not found" in str(status.get("message", "")) else 126


def _open(core: Any, namespace: str, pod: str, container: str, command: Sequence[str], *,
          stdin: bool, tty: bool) -> Any:
    from kubernetes.stream import stream

    return stream(core.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=list(command),
                  stderr=not tty, stdin=stdin, stdout=True, tty=tty, _preload_content=False)


def run(core: Any, namespace: str, pod: str, container: str, command: Sequence[str], timeout_s: float) -> ExecResult:
    """Run ``command`` to completion or ``timeout_s``. On timeout the stream is closed and the exit
    code is 124; the exec API cannot signal the process, so it may still finish inside the pod."""
    client = _open(core, namespace, pod, container, command, stdin=False, tty=False)
    out: list[str] = []
    err: list[str] = []
    deadline = time.monotonic() + timeout_s
    try:
        while client.is_open():
            left = deadline - time.monotonic()
            if left <= 0:
                err.append(f"\ncairn: timed out after {timeout_s:g}s")
                return ExecResult(TIMED_OUT, "".join(out), "".join(err).lstrip("\n"))
            client.update(timeout=min(left, 0.5))
            if client.peek_stdout():
                out.append(client.read_stdout())
            if client.peek_stderr():
                err.append(client.read_stderr())
        out.append(client.read_stdout() if client.peek_stdout() else "")
        err.append(client.read_stderr() if client.peek_stderr() else "")
        return ExecResult(_exit_code(client), "".join(out), "".join(err))
    finally:
        client.close()


def shell(core: Any, namespace: str, pod: str, container: str, command: Sequence[str]) -> int:
    """An interactive session: a tty in raw mode when the caller has one, else plain streams."""
    interactive = sys.stdin is not None and _isatty(0)
    client = _open(core, namespace, pod, container, command, stdin=interactive, tty=interactive)
    saved = None
    if interactive:
        import termios
        import tty

        saved = termios.tcgetattr(0)
        tty.setraw(0)
        _resize(client)
    try:
        while client.is_open():
            client.update(timeout=0.1)
            if client.peek_stdout():
                os.write(1, client.read_stdout().encode())
            if client.peek_stderr():
                os.write(2, client.read_stderr().encode())
            if interactive and select.select([0], [], [], 0)[0]:
                data = os.read(0, 4096)
                if not data:
                    break
                client.write_stdin(data.decode(errors="replace"))
        return _exit_code(client)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        client.close()


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def _resize(client: Any) -> None:
    import json

    size = os.get_terminal_size(0)
    client.write_channel(4, json.dumps({"Width": size.columns, "Height": size.lines}))


# --- logs ---------------------------------------------------------------------------------------
def _lines(core: Any, namespace: str, pod: str, container: str, follow: bool, tail: int | None) -> Any:
    kwargs: dict[str, Any] = {"container": container, "timestamps": True, "follow": follow, "_preload_content": False}
    if tail is not None:
        kwargs["tail_lines"] = tail
    return core.read_namespaced_pod_log(pod, namespace, **kwargs)


def _iter(response: Any) -> Iterator[str]:
    buffer = b""
    for chunk in response.stream(4096, decode_content=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
    if buffer:
        yield buffer.decode(errors="replace")


def logs(core: Any, namespace: str, pod: str, containers: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
    """Lines of ``containers`` (the app and its log-file follower), timestamped, merged by time."""
    if not follow:
        merged = [line for c in containers for line in _iter(_lines(core, namespace, pod, c, False, tail))]
        merged.sort(key=lambda line: line.split(" ", 1)[0])
        yield from merged[-tail:] if tail else merged
        return
    responses = [_lines(core, namespace, pod, c, True, tail) for c in containers]
    lines: queue.Queue[str | None] = queue.Queue()

    def pump(response: Any) -> None:
        try:
            for line in _iter(response):
                lines.put(line)
        except Exception:  # noqa: BLE001 - a closed stream ends its pump, nothing else
            pass
        finally:
            lines.put(None)

    for response in responses:
        threading.Thread(target=pump, args=(response,), daemon=True).start()
    open_streams = len(responses)
    try:
        while open_streams:
            line = lines.get()
            if line is None:
                open_streams -= 1
                continue
            yield line
    finally:
        for response in responses:
            response.release_conn() if hasattr(response, "release_conn") else None
            try:
                response.close()
            except Exception:  # noqa: BLE001
                pass
