"""A build's container: one command, run to its end by runc in the foreground, in a sandbox.

The same runc, image store, init (cairn-shim's ``init`` mode) and seccomp rules as an instance
(oci.py), narrowed for code nobody reviewed running as the worker's root would otherwise:

- the only host directory it sees is the build's own (``WORKDIR``): the checkout and a home;
  nothing of ``$CAIRN_HOME``, the Prefect database or another build's workspace is mounted.
- the root is the image under a throwaway overlay, mounted read-only (writable: the workdir,
  /tmp and /dev/shm, both tmpfs, charged to the build's memory limit).
- a fixed unprivileged user (``BUILD_UID``) owning the workdir, no capabilities at all (runc
  would otherwise hand a non-root user the sets it is given), ``noNewPrivileges``, the seccomp
  profile for an empty capability set.
- pid, ipc, uts, mount and cgroup namespaces of its own; network ``none`` (a namespace with
  loopback only) or ``host`` (the worker's network, for builds that download dependencies).
- memory (no swap), CPU and pids limits in a cgroup of its own; the timeout kills every process.

Secret variables reach the command as an instance's do: on fd 3 to the init, never in
config.json or argv. Output is kept in memory (its last ``log_limit`` bytes), never a file.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cairn.errors import PermanentError
from cairn.runtimes.local import cgroups, oci, runc, seccomp
from cairn.runtimes.local.container import Container

BUILD_UID = 65534  # the image's nobody/nogroup: owns nothing outside the workdir
WORKDIR = "/build"
KILL_WAIT_S = 10.0
Network = Literal["none", "host"]


@dataclass(frozen=True)
class BuildBox:
    """What one build's container is made of (the build task fills it from the SourceSpec)."""

    rootfs: str  # the container's root: an overlay over the image's rootfs
    workdir: str  # the host directory mounted at WORKDIR, owned by BUILD_UID
    argv: list[str]
    cwd: str  # inside WORKDIR
    env: dict[str, str]  # no secret values: those go on fd 3
    network: Network
    memory_bytes: int
    cpu: float
    cgroups_path: str
    init_binary: str
    resolv_conf: str | None = None  # the host's, read-only, for network host


def spec(box: BuildBox) -> dict[str, Any]:
    """The OCI spec: an instance's (oci.spec) with the narrowings the module docstring lists."""
    mounts = [oci.Mount(box.workdir, WORKDIR)]
    if box.network == "host" and box.resolv_conf:
        mounts.append(oci.Mount(box.resolv_conf, "/etc/resolv.conf", readonly=True))
    config = oci.spec(oci.ContainerSpec(
        rootfs=box.rootfs, hostname="build", netns="", argv=box.argv, cwd=box.cwd, env=box.env,
        uid=BUILD_UID, gid=BUILD_UID, memory_bytes=box.memory_bytes, cpu=box.cpu, cgroups_path=box.cgroups_path,
        init_binary=box.init_binary, seccomp=seccomp.profile(()), mounts=mounts,
    ))
    namespaces = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "network"]
    if box.network == "none":
        namespaces.append({"type": "network"})  # a new one: runc brings its loopback up, nothing else
    config["linux"]["namespaces"] = namespaces
    config["process"]["capabilities"] = {kind: [] for kind in ("bounding", "effective", "permitted", "inheritable", "ambient")}
    config["root"]["readonly"] = True
    return config


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None  # None: stopped at its timeout
    oom_killed: bool
    output: bytes  # the last bytes of stdout and stderr, interleaved as written


def own_workdir(path: Path) -> None:
    """Hand the workdir (the clone, made by root) to the build's user."""
    for root, dirs, files in os.walk(path):
        for name in (root, *(os.path.join(root, n) for n in dirs + files)):
            os.lchown(name, BUILD_UID, BUILD_UID)


def run(container: Container, image_rootfs: Path, box: BuildBox, secrets: dict[str, str], *,
        timeout_s: float, log_limit: int) -> Outcome:
    """Run ``box`` in ``container`` (its directory holds the bundle and the overlay) to its end
    or its timeout; the container is gone afterwards, whatever happened."""
    problem = cgroups.problem()
    if problem:
        raise PermanentError(f"a build's memory and CPU limits cannot be enforced on this host: {problem}",
                             hint="run the worker as root on a host with the memory and cpu cgroup controllers")
    container.prepare(image_rootfs, spec(box))
    try:
        return _run(container, secrets, timeout_s, log_limit)
    finally:
        container.remove()


def _run(container: Container, secrets: dict[str, str], timeout_s: float, log_limit: int) -> Outcome:
    out_r, out_w = os.pipe()
    env_r, env_w = os.pipe()
    try:
        os.write(env_w, runc.env_bytes(secrets))  # a pipe holds 64 KiB: secrets are far smaller
        os.close(env_w)
        env_w = -1
        # --keep: the stopped container keeps its cgroup, whose OOM counter tells an OOM kill from any other.
        argv = container.runc.argv("run", "--keep", "--bundle", str(container.dir / "bundle"), "--preserve-fds", "1", container.id)
        # posix_spawn, not Popen: the init reads the secrets on fd 3 exactly, and Popen cannot put
        # a pipe there without a preexec_fn, which is unsafe in the worker's threaded process.
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = os.posix_spawn(container.runc.binary, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                                 file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                                               (os.POSIX_SPAWN_DUP2, out_w, 2), (os.POSIX_SPAWN_DUP2, env_r, 3)],
                                 setsid=True)
        finally:
            os.close(devnull)
    except BaseException:
        os.close(out_r)
        raise
    finally:
        for fd in (out_w, env_r, env_w):
            if fd >= 0:
                os.close(fd)
    tail = _Tail(out_r, log_limit)
    tail.start()
    finished = _wait(pid, timeout_s)
    if not finished:
        container.signal(signal.SIGKILL, every_process=True)
        if not _wait(pid, KILL_WAIT_S):  # runc itself stuck (e.g. before the container ran)
            os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    oom = container.oom_kills() > 0  # before remove(): runc delete takes the cgroup with it
    container.runc.delete(container.id)
    tail.join(KILL_WAIT_S)  # every writer is gone with the container: the pipe ends at once
    return Outcome(os.waitstatus_to_exitcode(status) if finished else None, oom, tail.data())


def _wait(pid: int, timeout_s: float) -> bool:
    """Whether the child ``pid`` ended within ``timeout_s`` (it is left to be reaped)."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(fd)


class _Tail(threading.Thread):
    """Reads a pipe to its end, keeping its last ``limit`` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        super().__init__(daemon=True, name="build-output")
        self.fd, self.limit, self.buf = fd, limit, bytearray()

    def run(self) -> None:
        try:
            while chunk := os.read(self.fd, 65536):
                self.buf += chunk
                if len(self.buf) > 2 * self.limit:
                    del self.buf[: len(self.buf) - self.limit]
        finally:
            os.close(self.fd)

    def data(self) -> bytes:
        return bytes(self.buf[-self.limit:])


def resolv_conf(path: Path = Path("/etc/resolv.conf")) -> str | None:
    """The host's resolver configuration, for a build on the host network (None without one)."""
    return str(path) if path.is_file() else None
