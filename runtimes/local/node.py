"""What the agent does for each protocol call: create, read, stop and remove instances on disk.

The agent process serves these over its socket (agent.py); they read the truth from the state
directory and the shims every time, so a restarted agent needs no memory of its own. ``ensure``
validates everything (image, package, secrets, host paths) before it creates anything, and
undoes a half-made instance, so bad input leaves nothing started.
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn import packages
from cairn.errors import CairnError, NotFound, PermanentError
from cairn.images.credentials import Credentials
from cairn.images.reference import Reference
from cairn.images.store import ImageStore, resolve
from cairn.procs import alive
from cairn.redaction import redact
from cairn.revision import Revision
from cairn.runtime import EnvRef, ExecResult, Instance, Phase, TrafficView
from cairn.runtimes.local import binaries, cgroups, enter, events, netns, oci, seccomp, watch
from cairn.runtimes.local.balancer import Balancer
from cairn.runtimes.local.container import Container, umount
from cairn.runtimes.local.runc import Runc, container_id
from cairn.runtimes.local.state import RETIRING, EnvDir, all_instance_dirs, read_json, retiring, write_json
from cairn.runtimes.local.supervisor import Supervisor

STOP_MARGIN_S = 15.0
MAX_LONG_POLL_S = 60.0  # a long poll holds one of the agent's threads: bounded whatever the caller asks
# A long poll re-reads at least this often without a file change: a shim that died without a
# word (SIGKILL) turns its instance failed through /proc, which inotify does not see.
RECHECK_S = 0.5


def backoff_base() -> float:
    return float(os.environ.get("CAIRN_AGENT_BACKOFF_BASE_S", "10"))


@dataclass(frozen=True)
class Image:
    """A pulled, unpacked image: its read-only rootfs and the process its config describes."""

    ref: str  # pinned: registry/name[:tag]@sha256:...
    rootfs: Path
    process: dict[str, Any]  # umoci's reading of the image config: args, env, cwd, user
    pulled: str  # how it came: "already present" or how long the pull and unpack took


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
        self._supervisors: dict[Path, Supervisor] = {}
        self.runc = Runc(state / "runc")
        self.images = ImageStore(state / "images")
        self._shim: Path | None = None  # cairn-shim, built (or found) once per agent: see shim()

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
        elif status and phase != str(Phase.FAILED) and directory not in self._supervisors and self.balancer is not None:
            phase, reason = str(Phase.FAILED), "no supervisor: the agent could not adopt it; retry to recreate it"
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
    def _image(self, env: EnvRef, slots: Sequence[int], revision: Revision, login: Credentials | None) -> Image:
        """The revision's image in the store, pulled by digest and unpacked once; a failure is an
        ``ErrImagePull`` event on each slot and an error, before anything starts."""
        try:
            ref = Reference.parse(revision.image)
            pinned = ref if ref.digest else ref.at(resolve(ref, login))
            began = time.monotonic()
            had = self.images.has(str(pinned.digest))
            self.images.pull(pinned, login)
            rootfs = self.images.unpack(str(pinned.digest))
        except CairnError as exc:
            for slot in slots:
                events.record(EnvDir.of(self.state, env).events, env.instance(slot), "ErrImagePull",
                              f"image {revision.image}: {exc.message}", warning=True)
            raise
        process = json.loads((rootfs.parent / "config.json").read_text())["process"]
        took = "already present on this node" if had else f"pulled and unpacked in {time.monotonic() - began:.2f}s"
        return Image(str(pinned), rootfs, process, took)

    def _validate(self, revision: Revision, secrets: Mapping[str, str]) -> None:
        spec = revision.spec
        problem = cgroups.problem()
        if problem:
            raise PermanentError(f"memory and CPU limits cannot be enforced on this host: {problem}",
                                 hint="run the agent as root on a host with the memory and cpu cgroup controllers")
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

    def shim(self) -> Path:
        if self._shim is None:
            self._shim = binaries.shim_binary(self.state)  # hashes shim.c: not once per instance
        return self._shim

    def _oci(self, env: EnvRef, name: str, revision: Revision, image: Image, directory: Path, address: str) -> dict[str, Any]:
        spec = revision.spec
        mounts = [oci.Mount(str(directory / "etc" / "hosts"), "/etc/hosts", readonly=True),
                  oci.Mount(str(directory / "etc" / "hostname"), "/etc/hostname", readonly=True)]
        cwd = image.process.get("cwd") or "/"
        if revision.deploy_type == "code-package" and spec.deploy_root:
            mounts.append(oci.Mount(str(directory / "code"), spec.deploy_root))
            cwd = spec.deploy_root
        mounts += [oci.Mount(str(directory / "files" / str(i)), f.path, readonly=True) for i, f in enumerate(spec.files)]
        mounts += [oci.Mount(m.host_path, m.path) for m in spec.dirs]
        image_env = dict(item.split("=", 1) for item in image.process.get("env", []) if "=" in item)
        image_env.pop("TERM", None)  # umoci's default for a terminal; the app has none
        user: dict[str, Any] = {"uid": spec.user.uid, "gid": spec.user.gid} if spec.user else (image.process.get("user") or {})
        cid = container_id(env.cluster, directory)
        return oci.spec(oci.ContainerSpec(
            rootfs=str(directory / "rootfs"), hostname=name, netns=str(directory / "netns"),
            argv=list(spec.command) if spec.command else list(image.process.get("args") or []), cwd=cwd,
            env={**image_env, "HOSTNAME": name, **spec.env}, uid=int(user.get("uid", 0)), gid=int(user.get("gid", 0)),
            additional_gids=list(user.get("additionalGids") or []),
            memory_bytes=spec.memory_mb * 1024 * 1024, cpu=spec.cpu, cgroups_path=cgroups.container_path(cid),
            init_binary=str(self.shim()), seccomp=seccomp.profile(oci.capabilities(int(user.get("uid", 0)))),
            mounts=mounts, open_files=min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1 << 20),
            readonly_root=spec.read_only_root,
        ))

    def _config(self, env: EnvRef, slot: int, revision: Revision, image: Image, directory: Path,
                address: str, order: str | None) -> dict[str, Any]:
        spec, name = revision.spec, env.instance(slot)
        return {
            "instance": name, "slot": slot, "revision": revision.digest, "version": revision.version,
            "order": order, "spec": spec.model_dump(mode="json"), "address": address, "image": image.ref,
            "image_rootfs": str(image.rootfs), "container": container_id(env.cluster, directory),
            "shim": str(self.shim()),
            "ports": {str(p.container_port): p.container_port for p in spec.ports},
            "events": str(EnvDir.of(self.state, env).events), "backoff_base_s": backoff_base(),
            "secret_names": sorted(spec.secret_env),
            "oci": self._oci(env, name, revision, image, directory, address),
        }

    def _create(self, env: EnvRef, slot: int, revision: Revision, image: Image,
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
            events.record(events_file, name, "Pulled", f"Image {image.ref} {image.pulled}")
            if revision.deploy_type == "code-package" and revision.package_digest:
                packages.unpack(revision.package_digest, directory / "code")
                events.record(events_file, name, "Unpacked", f"Unpacked code package {revision.package_digest[:12]} into {spec.deploy_root}")
            for i, file in enumerate(spec.files):
                (directory / "files").mkdir(exist_ok=True)
                (directory / "files" / str(i)).write_text(file.content)
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
                        config["address"] = netns.allocate(used | taken)
                        write_json(directory / "config.json", config)
            _write_etc(directory, name, config["address"])
            supervisor = Supervisor(directory, config, Container(directory, config["container"], self.runc), secrets)
            with self._alloc:
                self._supervisors[directory] = supervisor
            supervisor.begin()
        except BaseException:
            with self._alloc:
                self._supervisors.pop(directory, None)
            netns.delete(directory / "netns")
            shutil.rmtree(directory, ignore_errors=True)
            raise

    def ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, secrets: Mapping[str, str],
               replace_failed: bool, order: str | None, login: Credentials | None = None) -> None:
        with self._env_lock(env):
            self._validate(revision, secrets)
            host_ports = [p.host_port for p in revision.spec.ports if p.host_port]
            release = self.balancer.claim(env, host_ports) if self.balancer and host_ports else None
            try:
                self._ensure(env, slots, revision, secrets, replace_failed, order, login)
            finally:
                if release:
                    release()

    def _ensure(self, env: EnvRef, slots: Sequence[int], revision: Revision, secrets: Mapping[str, str],
                replace_failed: bool, order: str | None, login: Credentials | None) -> None:
        current = {i.slot: i for i in self.observe_slots(env, slots)}
        replace: list[int] = []
        create: list[int] = []
        for slot in slots:
            have = current.get(slot)
            if have is None:
                create.append(slot)
            elif have.revision != revision.digest or (replace_failed and have.phase is Phase.FAILED):
                replace.append(slot)
        todo = sorted([*create, *replace])
        if not todo:
            return
        # Assigned now, as a scheduler binds a pod before its kubelet pulls: what follows (the
        # pull, stopping a predecessor, the container's start) is the instance's own start time.
        events_file = EnvDir.of(self.state, env).events
        for slot in todo:
            events.record(events_file, env.instance(slot), "Scheduled", f"Assigned {env.instance(slot)} to this node (revision {revision.short})")
        image = self._image(env, todo, revision, login)  # before anything stops or starts: a bad image changes nothing
        if replace:
            self._retire(env, replace)
        # In parallel, as a kubelet starts a batch's pods: a batch takes as long as its slowest
        # instance, not the sum of them (address allocation is serialised by self._alloc).
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(todo)))) as pool:
            list(pool.map(lambda slot: self._create(env, slot, revision, image, secrets, order), todo))

    # --- adopting ----------------------------------------------------------------------------
    def _adopted(self, directory: Path) -> Supervisor | None:
        """The supervisor of an instance an earlier agent left running (made and started now)."""
        config = read_json(directory / "config.json")
        if config is None or "container" not in config:
            return None
        with self._alloc:
            if directory in self._supervisors:
                return self._supervisors[directory]
        status = read_json(directory / "status.json") or None
        pid = (status or {}).get("app_pid")
        secrets = {}
        if pid and alive(pid, (status or {}).get("app_start")):
            try:
                secrets = enter.secrets_of(int(pid), config.get("secret_names", []))
            except OSError:
                secrets = {}
        supervisor = Supervisor(directory, config, Container(directory, config["container"], self.runc), secrets, status)
        with self._alloc:
            self._supervisors[directory] = supervisor
        return supervisor.begin()

    def adopt(self) -> int:
        """After an agent restart: supervise again every instance an earlier agent left."""
        found = [d for d in all_instance_dirs(self.state) if not retiring(d)]
        return sum(1 for d in found if self._adopted(d) is not None)

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
        grace = (config.get("spec") or {}).get("lifecycle", {}).get("termination_grace_period_s", 30)
        with self._alloc:
            supervisor = self._supervisors.get(directory)
        if supervisor is None and not now:
            supervisor = self._adopted(directory)  # one left by an earlier agent: its PreStop and grace still run
        if supervisor is not None:
            if not now:
                self._drain(directory, config, grace)
            supervisor.stop(now=now)
            if not supervisor.join((0 if now else grace) + STOP_MARGIN_S):
                print(f"the supervisor of {directory.name} did not finish its stop; removing it", file=sys.stderr, flush=True)
        if config.get("container"):
            Container(directory, config["container"], self.runc).remove()  # idempotent: gone already after a stop
        umount(directory / "rootfs")
        netns.delete(directory / "netns")
        shutil.rmtree(directory, ignore_errors=True)
        with self._alloc:
            self._supervisors.pop(directory, None)
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
        """After an agent restart: stop what an earlier agent began to retire (its supervisor,
        adopted by ``_stop``, runs what is left of the stop: PreStop, SIGTERM, the grace period)."""
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
    def _inside(self, env: EnvRef, name: str, command: Sequence[str], user: str, reason: str, what: str
                ) -> tuple[Container, dict[str, Any], dict[str, str]]:
        """The running container of ``name``, its config and secret values; records who runs what."""
        directory = self._dir(env, name)
        pid = self._app_pid(directory)
        config = read_json(directory / "config.json") or {}
        with self._alloc:
            supervisor = self._supervisors.get(directory)
        secrets = supervisor.secrets if supervisor else enter.secrets_of(pid, config.get("secret_names", []))
        shown = redact(shlex.join(command), secrets.values())
        events.record(EnvDir.of(self.state, env).events, name, reason, f"{user} {what}: {shown}")
        return Container(directory, config["container"], self.runc), config, secrets

    def exec(self, env: EnvRef, name: str, command: Sequence[str], user: str, timeout_s: float) -> ExecResult:
        container, config, secrets = self._inside(env, name, command, user, "Exec", "ran")
        return enter.run(container, config["oci"], command, secrets, timeout_s=timeout_s)

    def enter(self, env: EnvRef, name: str, command: Sequence[str], user: str) -> dict[str, Any]:
        """What a shell needs to join the container (``runc exec`` on the caller's terminal): the
        runc root, the container id and the process spec, without the secret values, which the
        caller (root on this machine) reads from the app's environment itself."""
        container, config, _ = self._inside(env, name, command, user, "Shell", "opened an interactive session")
        return {"runc_root": str(self.runc.root), "container": container.id, "pid": self._app_pid(container.dir),
                "process": oci.exec_process(config["oci"], list(command), {}), "secret_names": config.get("secret_names", [])}

    def log_path(self, env: EnvRef, name: str) -> Path:
        return self._dir(env, name) / "logs" / "container.log"

    def traffic(self, env: EnvRef) -> TrafficView:
        if self.balancer is None:
            raise PermanentError("this node has no load balancer", hint="ask the running agent (cairn agent start)")
        return self.balancer.snapshot(env)

    def close_supervisors(self) -> None:
        """The agent stops: supervision ends, containers and shims run on (the next agent adopts them)."""
        with self._alloc:
            self._supervisors.clear()

    def count(self) -> int:
        return sum(1 for _ in all_instance_dirs(self.state))


def _write_etc(directory: Path, name: str, address: str) -> None:
    """The instance's /etc/hosts and /etc/hostname, bind-mounted read-only (the kubelet's way)."""
    etc = directory / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "hostname").write_text(name + "\n")
    (etc / "hosts").write_text(f"127.0.0.1 localhost\n::1 localhost\n{address} {name}\n")
