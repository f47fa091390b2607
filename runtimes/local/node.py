"""What the agent does for each protocol call: create, read, stop and remove instances on disk.

The agent process serves these over its socket (agent.py); they read the truth from the state
directory and the shims every time, so a restarted agent needs no memory of its own. ``ensure``
validates everything (image, package, secrets, host paths) before it creates anything, and
undoes a half-made instance, so bad input leaves nothing started.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cairn import packages
from cairn.errors import NotFound, PermanentError
from cairn.procs import alive
from cairn.redaction import redact
from cairn.revision import Revision
from cairn.runtime import EnvRef, ExecResult, Instance, Phase, TrafficView
from cairn.runtimes.local import cgroups, enter, events, images, netns, watch
from cairn.runtimes.local.balancer import Balancer
from cairn.runtimes.local.state import RETIRING, EnvDir, all_instance_dirs, read_json, retiring, write_json

SHIM_START_TIMEOUT_S = 15.0
STOP_MARGIN_S = 15.0
MAX_LONG_POLL_S = 60.0  # a long poll holds one of the agent's threads: bounded whatever the caller asks
# A long poll re-reads at least this often without a file change: a shim that died without a
# word (SIGKILL) turns its instance failed through /proc, which inotify does not see.
RECHECK_S = 0.5


def backoff_base() -> float:
    return float(os.environ.get("CAIRN_AGENT_BACKOFF_BASE_S", "10"))


def shim_alive(status: Mapping[str, Any] | None) -> bool:
    return bool(status) and alive(status.get("shim_pid"), status.get("shim_start"))  # type: ignore[union-attr]


class Node:
    def __init__(self, state: Path, balancer: Balancer | None = None) -> None:
        self.state = state
        self.balancer = balancer  # None outside the agent (e.g. a purge without an agent)
        self._alloc = threading.Lock()
        self._env_locks: dict[EnvRef, threading.Lock] = {}
        # Instances replaced by newer ones stop here, off the caller's path (drain, PreStop, the
        # grace period): a batch waits for its new instances, not for the old ones to go.
        self._retirer = ThreadPoolExecutor(max_workers=16, thread_name_prefix="retire")
        self._retiring: dict[Path, Future[None]] = {}
        self._watcher: watch.Watcher | None = None  # made by the first long poll: a purge needs none
        self._closed = False

    def close(self) -> None:
        """The agent stops: every long poll answers now, and every later one at once."""
        with self._alloc:
            self._closed = True
            if self._watcher is not None:
                self._watcher.close()

    def _env_lock(self, env: EnvRef) -> threading.Lock:
        with self._alloc:
            return self._env_locks.setdefault(env, threading.Lock())

    # --- reading ---------------------------------------------------------------------------
    def _instance(self, directory: Path) -> Instance | None:
        config, status = read_json(directory / "config.json"), read_json(directory / "status.json")
        if config is None:
            return None
        status = status or {}
        phase, reason = status.get("phase", str(Phase.PENDING)), status.get("reason")
        if phase == "stopped":
            phase = str(Phase.TERMINATING)
        elif status and phase != str(Phase.FAILED) and not shim_alive(status):
            phase, reason = str(Phase.FAILED), "its supervisor (shim) is gone, e.g. after a reboot; retry to recreate it"
        ports = {int(k): int(v) for k, v in config["ports"].items()}
        return Instance(
            name=config["instance"], slot=config["slot"], revision=config["revision"], phase=Phase(phase),
            ready=bool(status.get("ready")) and phase == str(Phase.RUNNING), address=config["address"], ports=ports,
            restarts=status.get("restarts", 0), started_at=status.get("started_at"), reason=reason,
            exit_code=status.get("exit_code"),
        )

    def observe(self, env: EnvRef) -> list[Instance]:
        found = (self._instance(d) for d in EnvDir.of(self.state, env).instances() if not retiring(d))
        return sorted((i for i in found if i is not None), key=lambda i: i.slot)

    def observe_slots(self, env: EnvRef, slots: Sequence[int], unless: Sequence[Instance] | None = None,
                      wait_s: float = 0.0) -> list[Instance]:
        """The slots' instances, sorted by slot. With ``unless``, a long poll: answer once they differ
        from it (the kernel reports each file the shims write), or after ``wait_s``."""
        envdir = EnvDir.of(self.state, env)

        def watched() -> list[Path]:  # where a change of the slots shows: their live directories and the folder of all
            live = (envdir.live(env.instance(s)) for s in sorted(set(slots)))
            return [envdir.root / "instances", *(d for d in live if d is not None)]

        def read(directories: list[Path]) -> list[Instance]:
            return sorted((i for i in map(self._instance, directories[1:]) if i is not None), key=lambda i: i.slot)

        if unless is None:
            return read(watched())
        with self._alloc:  # a poll that begins once the agent stops answers at once (close)
            if not self._closed:
                self._watcher = self._watcher or watch.Watcher()
            watcher = None if self._closed else self._watcher
        if watcher is None:
            return read(watched())
        return watcher.until_changed(watched, read, sorted(unless, key=lambda i: i.slot), min(wait_s, MAX_LONG_POLL_S), RECHECK_S)

    def _dir(self, env: EnvRef, name: str) -> Path:
        directory = EnvDir.of(self.state, env).live(name)
        if directory is None or not (directory / "config.json").exists():
            raise NotFound(f"no instance {name} in {env.app}/{env.environment}", hint="cairn status lists the instances")
        return directory

    def _app_pid(self, directory: Path) -> int:
        status = read_json(directory / "status.json") or {}
        pid = status.get("app_pid")
        if not pid or not alive(pid, status.get("app_start")):
            raise PermanentError(f"instance {directory.name} has no running process (phase {status.get('phase')})",
                                 hint="wait until it runs, or read its events")
        return int(pid)

    # --- creating --------------------------------------------------------------------------
    def _validate(self, revision: Revision, secrets: Mapping[str, str]) -> images.Image:
        image = images.resolve(revision.image)
        spec = revision.spec
        if revision.deploy_type == "code-package":
            if not revision.package_digest:
                raise PermanentError("deploy type code-package needs a code package", hint="build or add a package for this version")
            packages.read_verified(revision.package_digest)
        missing = sorted(set(spec.secret_env) - set(secrets))
        if missing:
            raise PermanentError(f"no value for secret variables {', '.join(missing)}", hint="pass every secret_env value to ensure")
        for i, mount in enumerate(spec.dirs):
            host = Path(mount.host_path)
            try:
                host.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PermanentError(
                    f"dirs[{i}]: host path {mount.host_path} for {mount.path} cannot be created: {exc.strerror}",
                    hint="pick a host_path the agent (root) can create, outside read-only or file paths",
                ) from None
            if not host.is_dir():
                raise PermanentError(f"dirs[{i}]: host path {mount.host_path} is not a directory", hint="point host_path at a directory")
        return image

    def _config(self, env: EnvRef, slot: int, revision: Revision, image: images.Image, directory: Path,
                address: str, order: str | None) -> dict[str, Any]:
        spec, name = revision.spec, env.instance(slot)
        mounts: list[dict[str, Any]] = []
        workdir = image.workdir
        if revision.deploy_type == "code-package" and spec.deploy_root:
            mounts.append({"source": str(directory / "code"), "target": spec.deploy_root, "kind": "dir"})
            workdir = spec.deploy_root
        for i, file in enumerate(spec.files):
            source = directory / "files" / str(i)
            mounts.append({"source": str(source), "target": file.path, "kind": "file", "readonly": True})
        for mount in spec.dirs:
            mounts.append({"source": mount.host_path, "target": mount.path, "kind": "dir"})
        env_vars = {"PATH": images.default_path(), "HOME": "/root", "HOSTNAME": name, **image.env, **spec.env}
        return {
            "instance": name, "slot": slot, "env": env_vars, "revision": revision.digest, "version": revision.version,
            "order": order, "spec": spec.model_dump(mode="json"), "address": address,
            "ports": {str(p.container_port): p.container_port for p in spec.ports},
            "cgroups": {}, "events": str(EnvDir.of(self.state, env).events), "backoff_base_s": backoff_base(),
            "secret_names": sorted(spec.secret_env),
            "run": {
                "netns": str(directory / "netns"), "layer": str(directory / "layer"), "root": str(directory / "root"),
                "rootfs": image.rootfs, "mounts": mounts, "workdir": workdir, "hostname": name, "address": address,
                "argv": image.argv(spec.command), "cgroups": {},
            },
        }

    def _create(self, env: EnvRef, slot: int, revision: Revision, image: images.Image,
                secrets: Mapping[str, str], order: str | None) -> None:
        name = env.instance(slot)
        directory = EnvDir.of(self.state, env).fresh(name)
        spec = revision.spec
        events_file = EnvDir.of(self.state, env).events
        with self._alloc:
            used = {c["address"] for d in all_instance_dirs(self.state) if (c := read_json(d / "config.json"))}
            address = netns.allocate(used)
            config = self._config(env, slot, revision, image, directory, address, order)
            directory.mkdir(parents=True)
            write_json(directory / "config.json", config)  # claims the address
        try:
            events.record(events_file, name, "Scheduled", f"Assigned {name} to this node (revision {revision.short})")
            if revision.deploy_type == "code-package" and revision.package_digest:
                packages.unpack(revision.package_digest, directory / "code")
                events.record(events_file, name, "Unpacked", f"Unpacked code package {revision.package_digest[:12]} into {spec.deploy_root}")
            else:
                events.record(events_file, name, "Pulled", f"Image {image.ref} found at {image.directory}")
            for i, file in enumerate(spec.files):
                (directory / "files").mkdir(exist_ok=True)
                (directory / "files" / str(i)).write_text(file.content)
            paths = cgroups.create(directory.name, spec.memory_mb, spec.cpu)
            if not paths:
                events.record(events_file, name, "LimitsNotEnforced", str(cgroups.problem()), warning=True)
            config["cgroups"] = config["run"]["cgroups"] = paths
            write_json(directory / "config.json", config)
            netns.ensure_bridge()  # another agent's purge may have removed it since this one started
            taken: set[str] = set()
            while True:
                try:
                    netns.create(directory / "netns", config["address"])
                    break
                except netns.AddressTaken:
                    with self._alloc:
                        taken.add(config["address"])
                        used = {c["address"] for d in all_instance_dirs(self.state) if (c := read_json(d / "config.json"))}
                        config["address"] = config["run"]["address"] = netns.allocate(used | taken)
                        write_json(directory / "config.json", config)
            self._spawn_shim(directory, secrets)
        except BaseException:
            cgroups.remove(config["cgroups"])
            netns.delete(directory / "netns")
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def _spawn_shim(self, directory: Path, secrets: Mapping[str, str]) -> None:
        # Secrets travel on the shim's stdin: never argv (visible in ps), never a file.
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.runtimes.local.shim", str(directory)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        proc.communicate(json.dumps(dict(secrets)).encode(), timeout=SHIM_START_TIMEOUT_S)
        deadline = time.monotonic() + SHIM_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if shim_alive(read_json(directory / "status.json")):
                return
            time.sleep(0.05)
        raise PermanentError(f"the supervisor of {directory.name} did not start", hint=f"see {directory / 'shim.log'}")

    def ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, secrets: Mapping[str, str],
               replace_failed: bool, order: str | None) -> None:
        with self._env_lock(env):
            image = self._validate(revision, secrets)
            host_ports = [p.host_port for p in revision.spec.ports if p.host_port]
            release = self.balancer.claim(env, host_ports) if self.balancer and host_ports else None
            try:
                self._ensure(env, slots, revision, image, secrets, replace_failed, order)
            finally:
                if release:
                    release()

    def _ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, image: images.Image,
                secrets: Mapping[str, str], replace_failed: bool, order: str | None) -> None:
        current = {i.slot: i for i in self.observe_slots(env, slots)}
        replace: list[int] = []
        create: list[int] = []
        for slot in slots:
            have = current.get(slot)
            if have is None:
                create.append(slot)
            elif have.revision != revision.digest or (replace_failed and have.phase is Phase.FAILED):
                replace.append(slot)
        if replace:
            self._retire(env, replace)
        todo = sorted([*create, *replace])
        # In parallel, as a kubelet starts a batch's pods: a batch takes as long as its slowest
        # instance, not the sum of them (address allocation is serialised by self._alloc).
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
            list(pool.map(lambda slot: self._create(env, slot, revision, image, secrets, order), todo))

    # --- stopping --------------------------------------------------------------------------
    def _drain(self, directory: Path, config: Mapping[str, Any], grace: float) -> None:
        """Out of rotation before PreStop runs, and its open connections finish (up to the grace
        period): the balancer is in this process, so there is no propagation delay to wait out."""
        if self.balancer is None or not any(p.get("host_port") for p in (config.get("spec") or {}).get("ports", [])):
            return
        try:
            drained = self.balancer.drain(str(directory), grace)
        except Exception as exc:  # noqa: BLE001 - a balancer problem must never block a stop
            print(f"drain of {directory.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            return
        if drained["open_at_start"]:
            left = f", {drained['open_left']} still open" if drained["open_left"] else ""
            events.record(Path(config["events"]), config["instance"], "Drained",
                          f"out of the load balancer; {drained['open_at_start']} open connection(s) waited on for "
                          f"{drained['waited_s']:g}s{left}", warning=bool(drained["open_left"]))

    def _stop(self, directory: Path, *, now: bool) -> None:
        config = read_json(directory / "config.json") or {}
        status = read_json(directory / "status.json") or {}
        grace = (config.get("spec") or {}).get("lifecycle", {}).get("termination_grace_period_s", 30)
        if not now and shim_alive(status):
            self._drain(directory, config, grace)
        if shim_alive(status):
            os.kill(status["shim_pid"], signal.SIGUSR1 if now else signal.SIGTERM)
            deadline = time.monotonic() + (0 if now else grace) + STOP_MARGIN_S
            while shim_alive(read_json(directory / "status.json")) and time.monotonic() < deadline:
                time.sleep(0.05)
            status = read_json(directory / "status.json") or {}
            if shim_alive(status):
                os.kill(status["shim_pid"], signal.SIGKILL)
        if alive(status.get("app_pid"), status.get("app_start")):
            os.kill(status["app_pid"], signal.SIGKILL)
        cgroups.remove(config.get("cgroups") or {})
        netns.delete(directory / "netns")
        shutil.rmtree(directory, ignore_errors=True)
        if self.balancer is not None:
            self.balancer.forget(str(directory))

    def _retire(self, env: EnvRef, slots: Sequence[int]) -> None:
        """Mark the slots' live instances retiring (reads skip them from now on) and stop them in
        the background; the marker lets a restarted agent finish the job (:meth:`finish_retiring`)."""
        envdir = EnvDir.of(self.state, env)
        for slot in slots:
            directory = envdir.live(env.instance(slot))
            if directory is not None:
                (directory / RETIRING).touch()
                self._retire_dir(directory)

    def _retire_dir(self, directory: Path) -> None:
        with self._alloc:
            if directory not in self._retiring:
                future = self._retirer.submit(self._stop, directory, now=False)
                self._retiring[directory] = future
                future.add_done_callback(lambda _f: self._forget_retired(directory))

    def _forget_retired(self, directory: Path) -> None:
        with self._alloc:
            self._retiring.pop(directory, None)

    def finish_retiring(self) -> int:
        """After an agent restart: stop what an earlier agent began to retire."""
        left = [d for d in all_instance_dirs(self.state) if retiring(d)]
        for directory in left:
            self._retire_dir(directory)
        return len(left)

    def terminate(self, env: EnvRef, slots: Sequence[int], *, now: bool = False) -> None:
        """Stop every instance of the slots, retiring ones included, and return once they are gone."""
        envdir = EnvDir.of(self.state, env)
        targets = [d for s in slots for d in envdir.generations(env.instance(s))]
        with self._alloc:
            pending = [self._retiring[d] for d in targets if d in self._retiring]
            targets = [d for d in targets if d not in self._retiring]
        if targets:
            with ThreadPoolExecutor(max_workers=len(targets)) as pool:
                list(pool.map(lambda d: self._stop(d, now=now), targets))
        for future in pending:
            future.result()

    def purge(self) -> int:
        """Stop every instance at once (SIGKILL, no PreStop). The bridge stays, as docker0 does: it
        holds nothing, and another agent on this machine may be attaching an instance to it right
        now (removing it "when empty" raced that attach)."""
        targets = list(all_instance_dirs(self.state))
        if targets:
            with ThreadPoolExecutor(max_workers=min(16, len(targets))) as pool:
                list(pool.map(lambda d: self._stop(d, now=True), targets))
        return len(targets)

    # --- inside an instance ----------------------------------------------------------------
    def _redact(self, directory: Path, pid: int, text: str) -> str:
        config = read_json(directory / "config.json") or {}
        environ = enter.environ(pid)
        return redact(text, (environ.get(var, "") for var in config.get("secret_names", [])))

    def exec(self, env: EnvRef, name: str, command: Sequence[str], user: str, timeout_s: float) -> ExecResult:
        directory = self._dir(env, name)
        pid = self._app_pid(directory)
        shown = self._redact(directory, pid, shlex.join(command))
        events.record(EnvDir.of(self.state, env).events, name, "Exec", f"{user} ran: {shown}")
        result: ExecResult = enter.run(pid, command, timeout_s=timeout_s)
        return result

    def enter(self, env: EnvRef, name: str, command: Sequence[str], user: str) -> int:
        """The pid a shell joins; the session itself runs on the caller's terminal."""
        directory = self._dir(env, name)
        pid = self._app_pid(directory)
        shown = self._redact(directory, pid, shlex.join(command))
        events.record(EnvDir.of(self.state, env).events, name, "Shell", f"{user} opened an interactive session: {shown}")
        return pid

    def log_path(self, env: EnvRef, name: str) -> Path:
        return self._dir(env, name) / "logs" / "container.log"

    def traffic(self, env: EnvRef) -> TrafficView:
        if self.balancer is None:
            raise PermanentError("this node has no load balancer", hint="ask the running agent (cairn agent start)")
        return self.balancer.snapshot(env)

    def count(self) -> int:
        return sum(1 for _ in all_instance_dirs(self.state))
