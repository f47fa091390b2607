"""The OCI runtime spec (runc's ``config.json``) of one local container, from its image and revision.

Pure: everything it needs comes in as a ``ContainerSpec``; nothing is read or written here, so
the rules are table-tested (tests/unit/test_local_oci.py). What a container gets, and why:

- namespaces: pid, ipc, uts, mount and cgroup of its own; the network namespace the agent made
  for the instance on the cairn0 bridge (one address per instance, as a pod has).
- capabilities: cairn's set, the same a pod gets on the kubernetes runtime (cairn.capabilities):
  containerd's default minus NET_RAW as root, only NET_BIND_SERVICE otherwise.
- ``noNewPrivileges``, the containers-common seccomp allowlist (seccomp.py), and runc's own
  masked and read-only paths under /proc and /sys, with /sys mounted read-only.
- limits as ``linux.resources`` (memory with no swap beyond it, a CFS quota for CPU) on a cgroup
  path of its own, so runc writes them on a cgroup v1 or v2 host alike.
- the image's user unless the environment's ``user`` sets a uid/gid; its environment without
  any secret value: secrets reach the first process on fd 3 (shim.c), never this file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cairn import capabilities as cairn_capabilities

OCI_VERSION = "1.0.2"
INIT_PATH = "/.cairn/init"  # where shim.c's init mode is bind-mounted, read-only
CFS_PERIOD_US = 100_000


def capabilities(uid: int) -> tuple[str, ...]:
    """The OCI names of the capabilities a process running as ``uid`` holds (cairn.capabilities)."""
    return tuple(f"CAP_{name}" for name in cairn_capabilities.for_uid(uid))


# runc spec's defaults (libcontainer/specconv.Example).
MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
_NOSUID_NOEXEC_NODEV = ["nosuid", "noexec", "nodev"]
BASE_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc", "options": _NOSUID_NOEXEC_NODEV},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
     "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": [*_NOSUID_NOEXEC_NODEV, "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": _NOSUID_NOEXEC_NODEV},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": [*_NOSUID_NOEXEC_NODEV, "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": [*_NOSUID_NOEXEC_NODEV, "relatime", "ro"]},
    {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]},
)


@dataclass(frozen=True)
class Mount:
    source: str  # a path on the host
    target: str  # where the container sees it
    readonly: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    """Everything the spec is made of (``node`` fills it from the revision and the image)."""

    rootfs: str  # the instance's own root: its writable layer over the image's rootfs
    hostname: str
    netns: str  # the instance's network namespace (a bind-mounted nsfs file)
    argv: list[str]  # what runs: the image's entrypoint + cmd, or the revision's command
    cwd: str
    env: dict[str, str]  # no secret values: those go on fd 3
    uid: int
    gid: int
    memory_bytes: int
    cpu: float  # cores
    cgroups_path: str  # e.g. /cairn/<container id>
    init_binary: str  # the static cairn-shim on the host, mounted at INIT_PATH
    seccomp: dict[str, Any] | None = None
    mounts: list[Mount] = field(default_factory=list)
    additional_gids: list[int] = field(default_factory=list)
    open_files: int = 1024  # RLIMIT_NOFILE: at most the agent's own hard limit (runc cannot raise it)
    readonly_root: bool = False  # the environment's read_only_root; /tmp is a tmpfs either way (BASE_MOUNTS)


def spec(c: ContainerSpec) -> dict[str, Any]:
    caps = list(capabilities(c.uid))
    mounts = [dict(m) for m in BASE_MOUNTS]
    mounts.append({"destination": INIT_PATH, "type": "bind", "source": c.init_binary, "options": ["bind", "ro", "nosuid", "nodev"]})
    for m in c.mounts:
        options = ["rbind", "nosuid", "nodev"] + (["ro"] if m.readonly else ["rw"])
        mounts.append({"destination": m.target, "type": "bind", "source": m.source, "options": options})
    quota = max(1000, int(c.cpu * CFS_PERIOD_US))
    linux: dict[str, Any] = {
        "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"},
                       {"type": "network", "path": c.netns}],
        "cgroupsPath": c.cgroups_path,
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}],
            # swap == limit: no escape into swap (memory.memsw / memory.swap.max = 0 beyond it)
            "memory": {"limit": c.memory_bytes, "swap": c.memory_bytes},
            "cpu": {"quota": quota, "period": CFS_PERIOD_US},
            "pids": {"limit": 4096},
        },
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if c.seccomp is not None:
        linux["seccomp"] = c.seccomp
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": c.uid, "gid": c.gid, **({"additionalGids": c.additional_gids} if c.additional_gids else {})},
            "args": [INIT_PATH, "init", *c.argv],
            "env": [f"{k}={v}" for k, v in c.env.items()],
            "cwd": c.cwd,
            "capabilities": {kind: caps for kind in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": c.open_files, "soft": c.open_files}],
            "noNewPrivileges": True,
        },
        "root": {"path": c.rootfs, "readonly": c.readonly_root},
        "hostname": c.hostname,
        "mounts": mounts,
        "linux": linux,
    }


def exec_process(base: dict[str, Any], argv: list[str], secrets: Mapping[str, str], *,
                 terminal: bool = False) -> dict[str, Any]:
    """The process spec ``runc exec`` runs: the container's own user, cwd, capabilities and limits,
    its environment plus the secret variables (this spec travels on a pipe, never a file)."""
    process = dict(base["process"])
    env = dict(item.split("=", 1) for item in process.get("env", []))
    process["args"] = list(argv)
    process["env"] = [f"{k}={v}" for k, v in {**env, **secrets}.items()]
    process["terminal"] = terminal
    return process
