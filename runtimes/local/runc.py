"""runc, as the local runtime calls it: state, kill, delete, and exec with the secrets on fd 3.

One runc root per agent (``<state>/runc``), so agents with different state directories on one
machine never see each other's containers. A container's id is its instance directory's name
prefixed by its cluster (``container_id``). ``runc run`` itself is started by the shim (shim.c),
which must be the container's parent.

``exec`` passes the process spec, whose environment holds the secret variables, on a pipe
(``--process /dev/fd/N``): it never touches a file and is not in argv.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cairn.errors import PermanentError
from cairn.runtime import ExecResult

RUNC = "/usr/sbin/runc"
CALL_TIMEOUT_S = 30.0
_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def container_id(cluster: str, directory: Path) -> str:
    """runc's id for an instance directory: ``<cluster>.<name>`` with ``~k`` spelled ``_k``."""
    return _ID_CHARS.sub("_", f"{cluster}.{directory.name}")


def env_bytes(env: Mapping[str, str]) -> bytes:
    """``NAME=VALUE\\0`` pairs: what the init reads on fd 3 (no value may hold a NUL byte)."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


class Runc:
    def __init__(self, root: Path, binary: str = RUNC) -> None:
        self.root, self.binary = root, binary

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    def _call(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=CALL_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise PermanentError(f"{self.binary} is missing", hint="apt-get install runc") from None
        if check and done.returncode != 0:
            raise PermanentError(f"runc {args[0]} failed: {done.stderr.strip()[-300:]}", hint="see the agent's log")
        return done

    def state(self, cid: str) -> dict[str, Any] | None:
        """runc's view (``status``: created, running, stopped; ``pid``), or None if it has no such container."""
        done = self._call("state", cid, check=False)
        if done.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(done.stdout)
        return data

    def kill(self, cid: str, sig: int, *, every_process: bool = False) -> None:
        """Signal the container's first process (``every_process``: all of its processes). A
        container that is gone already is fine."""
        args = ["kill", *(["--all"] if every_process else []), cid, str(int(sig))]
        self._call(*args, check=False)

    def delete(self, cid: str) -> None:
        """Remove the container (killing what is left of it) and its cgroup; idempotent."""
        self._call("delete", "--force", cid, check=False)

    def exec_argv(self, cid: str, process_fd: int, *, tty: bool = False) -> list[str]:
        return self.argv("exec", *(["--tty"] if tty else []), "--process", f"/dev/fd/{process_fd}", cid)

    def exec(self, cid: str, process: dict[str, Any], *, timeout_s: float) -> ExecResult:
        """Run ``process`` in the container; a timeout kills it and gives exit code 124."""
        with _spec_pipe(process) as fd:
            proc = subprocess.Popen(
                self.exec_argv(cid, fd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(fd,), start_new_session=True,
            )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            return ExecResult(124, out.decode(errors="replace"), err.decode(errors="replace") + f"\ntimed out after {timeout_s:g}s")
        return ExecResult(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def interactive(self, cid: str, process: dict[str, Any]) -> int:
        """Run ``process`` on the caller's own terminal, with a terminal of its own when the caller
        has one (as ``kubectl exec -it`` does; piped input gets plain pipes); its exit code."""
        tty = os.isatty(0)
        with _spec_pipe({**process, "terminal": tty}) as fd:
            proc = subprocess.Popen(self.exec_argv(cid, fd, tty=tty), pass_fds=(fd,))
        return proc.wait()


@contextmanager
def _spec_pipe(process: dict[str, Any]) -> Iterator[int]:
    """The process spec in a pipe (its read end yielded): the secret variables in its ``env``
    reach runc without a file; a pipe holds 64 KiB before a writer blocks."""
    data = json.dumps(process).encode()
    if len(data) > 60000:
        raise PermanentError("the process spec is over 60000 bytes", hint="pass fewer or shorter variables")
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, data)
    finally:
        os.close(write_fd)
    try:
        yield read_fd
    finally:
        os.close(read_fd)
