"""One local container: its root, its spec, its runs (each started by a shim), and its end.

Inside an instance directory (state.py shows the whole tree):

    bundle/config.json   the OCI runtime spec (oci.py): no secret value
    rootfs/              an overlay: the image's unpacked rootfs (read-only, shared by every
                         instance of that digest) under this run's own writable layer
    layer/upper, work    the writable layer, made fresh for each run, as a restarted
                         container gets on Kubernetes
    run/                 the current run: shim.pid, pid (runc's), exit (the shim's), runc.log
    logs/container.log   stdout and stderr, timestamped, secrets masked (written by the shim)

Everything here reads the truth from those files and from runc, so an agent that restarted
finds each container as it is (``Container.of``) and goes on supervising it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cairn.errors import PermanentError
from cairn.procs import ProcessRef
from cairn.runtimes.local import cgroups, runc
from cairn.runtimes.local.runc import Runc

START_TIMEOUT_S = 30.0
SHIM_CHECK_S = 1.0
MOUNT_TIMEOUT_S = 15.0


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def umount(path: Path) -> None:
    """Detach ``path``'s mount if there is one (lazily: a process still inside lets go later)."""
    if _mounted(path):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=MOUNT_TIMEOUT_S)


class Container:
    def __init__(self, directory: Path, cid: str, runtime: Runc) -> None:
        self.dir, self.id, self.runc = directory, cid, runtime
        self._shim: ProcessRef | None = None  # this run's shim, read once
        self._shim_checked = 0.0

    @property
    def rundir(self) -> Path:
        return self.dir / "run"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def log_path(self) -> Path:
        return self.dir / "logs" / "container.log"

    # --- a run -------------------------------------------------------------------------------
    def prepare(self, image_rootfs: Path, spec: dict[str, Any]) -> None:
        """A fresh writable layer over the image, mounted at ``rootfs``, and the spec beside it.
        runc makes the bind mounts' targets in the writable layer, resolving them inside the root."""
        self.runc.delete(self.id)  # the previous run's container, if any
        self._shim = None
        umount(self.rootfs)
        shutil.rmtree(self.dir / "layer", ignore_errors=True)
        shutil.rmtree(self.rundir, ignore_errors=True)
        for path in (self.dir / "layer" / "upper", self.dir / "layer" / "work", self.rootfs, self.rundir,
                     self.dir / "bundle", self.log_path.parent):
            path.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={image_rootfs},upperdir={self.dir / 'layer' / 'upper'},workdir={self.dir / 'layer' / 'work'}"
        done = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(self.rootfs)],
                              capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S)
        if done.returncode != 0:
            raise PermanentError(f"the root of {self.dir.name} could not be mounted: {done.stderr.strip()}",
                                 hint="the local runtime needs root and overlayfs")
        (self.dir / "bundle" / "config.json").write_text(json.dumps(spec))

    def start(self, shim: Path, secrets: Mapping[str, str], log_max_bytes: int, log_keep: int) -> int:
        """Start a run (the shim runs ``runc run``); the container's pid once it runs. A run that
        could not start raises PermanentError with runc's reason."""
        argv = [str(shim), "run", self.runc.binary, str(self.runc.root), str(self.dir / "bundle"), self.id,
                str(self.rundir), str(self.log_path), str(log_max_bytes), str(log_keep)]
        # Secrets on the shim's stdin, which hands them to the container on fd 3 (shim.c).
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        proc.communicate(runc.env_bytes(secrets), timeout=START_TIMEOUT_S)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            pid = self.pid()
            if pid is not None:
                return pid
            code = self.exit_code()
            if code is not None:
                raise PermanentError(f"the container of {self.dir.name} did not start: {self.runc_error()}",
                                     hint="see the instance's events and its runc.log")
            time.sleep(0.01)  # the shim's pid file is the condition; runc takes ~0.1 s
        raise PermanentError(f"the container of {self.dir.name} did not start within {START_TIMEOUT_S:g}s",
                             hint=f"see {self.rundir / 'runc.log'}")

    # --- what the files say ----------------------------------------------------------------
    def pid(self) -> int | None:
        try:
            return int((self.rundir / "pid").read_text().strip() or 0) or None
        except (FileNotFoundError, ValueError):
            return None

    def shim(self) -> ProcessRef | None:
        try:
            pid = int((self.rundir / "shim.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        ref = ProcessRef.of(pid)
        return ref if ref is not None and ref.alive() else None

    def exit_code(self) -> int | None:
        """The run's exit code once it ended (the shim wrote it), else None."""
        try:
            return int(json.loads((self.rundir / "exit").read_text())["exit_code"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def runc_error(self) -> str:
        """The last error runc logged for this run, in its own words."""
        try:
            lines = (self.rundir / "runc.log").read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return "no reason recorded"
        for line in reversed(lines):
            if "level=error" in line:
                message = line.split('msg="', 1)[-1].rstrip('"')
                return message.replace('\\"', '"')[-400:]
        return lines[-1][-400:] if lines else "no reason recorded"

    def oom_kills(self) -> int:
        return cgroups.oom_kills(cgroups.container_path(self.id))

    def running(self) -> bool:
        """The run has not ended: no exit record, and its shim lives. Asked every 0.1 s by each
        instance's supervisor: a stat each time, the shim's liveness (its pid file, /proc) once
        a second, since a shim that dies without a record is the rare case."""
        if (self.rundir / "exit").exists():
            return False
        now = time.monotonic()
        if self._shim is None or now - self._shim_checked >= SHIM_CHECK_S:
            self._shim_checked = now
            self._shim = self.shim()
        return self._shim is not None

    # --- the end ---------------------------------------------------------------------------
    def signal(self, sig: int, *, every_process: bool = False) -> None:
        self.runc.kill(self.id, sig, every_process=every_process)

    def remove(self) -> None:
        """The container gone (its processes killed), its root unmounted; the directory stays."""
        self.runc.delete(self.id)
        umount(self.rootfs)
