"""The local container's OCI spec, seccomp profile and cgroup readings: table tests, named rules.

The cgroup v2 path is covered here with a cgroup tree laid out as the kernel does on a v2 host
(this machine is cgroup v1, where the behaviour suite covers the real thing: OOMKilled, limits).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cairn.runtimes.local import cgroups, oci, seccomp

BASE = oci.ContainerSpec(
    rootfs="/state/i/rootfs", hostname="shop-test-0", netns="/state/i/netns", argv=["python3", "app.py"], cwd="/acs/code",
    env={"PATH": "/usr/bin", "LOG_LEVEL": "debug"}, uid=1000, gid=1000, memory_bytes=256 << 20, cpu=0.5,
    cgroups_path="/cairn/local.shop-test-0", init_binary="/state/bin/cairn-shim-abc",
    mounts=[oci.Mount("/state/i/files/0", "/etc/shop/app.conf", readonly=True), oci.Mount("/srv/data", "/var/data")],
)
SPEC = oci.spec(BASE)
CAPS = set(SPEC["process"]["capabilities"]["bounding"])


def _mount(target: str) -> dict[str, Any]:
    return next(m for m in SPEC["mounts"] if m["destination"] == target)


@pytest.mark.parametrize(("rule", "holds"), [
    ("its own pid, ipc, uts, mount and cgroup namespaces",
     lambda s: {n["type"] for n in s["linux"]["namespaces"] if "path" not in n} == {"pid", "ipc", "uts", "mount", "cgroup"}),
    ("the network namespace is the instance's own, on the bridge",
     lambda s: {"type": "network", "path": "/state/i/netns"} in s["linux"]["namespaces"]),
    ("no user or time namespace is shared or made", lambda s: not {"user", "time"} & {n["type"] for n in s["linux"]["namespaces"]}),
    ("no new privileges", lambda s: s["process"]["noNewPrivileges"] is True),
    ("no CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_NET_ADMIN, CAP_SYS_RAWIO or CAP_DAC_READ_SEARCH",
     lambda s: not {"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_MODULE", "CAP_NET_ADMIN", "CAP_SYS_RAWIO",
                    "CAP_DAC_READ_SEARCH"} & set(s["process"]["capabilities"]["bounding"])),
    ("a non-root app holds CAP_NET_BIND_SERVICE alone, as Pod Security restricted admits",
     lambda s: s["process"]["capabilities"]["bounding"] == ["CAP_NET_BIND_SERVICE"]),
    ("a root app holds containerd's default set minus CAP_NET_RAW, as Pod Security baseline admits",
     lambda s: set(oci.spec(replace(BASE, uid=0, gid=0))["process"]["capabilities"]["bounding"])
     == {f"CAP_{c}" for c in ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                               "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")}),
    ("no inheritable or ambient capabilities",
     lambda s: not s["process"]["capabilities"].get("inheritable") and not s["process"]["capabilities"].get("ambient")),
    ("runc's masked paths hide the kernel's keys and memory",
     lambda s: {"/proc/kcore", "/proc/keys", "/sys/firmware"} <= set(s["linux"]["maskedPaths"])),
    ("/proc/sys and sysrq are read-only", lambda s: {"/proc/sys", "/proc/sysrq-trigger"} <= set(s["linux"]["readonlyPaths"])),
    ("/sys is read-only", lambda s: "ro" in _mount("/sys")["options"]),
    ("/dev is a private tmpfs: no host devices", lambda s: _mount("/dev")["type"] == "tmpfs"),
    ("every device is denied but what runc adds by default", lambda s: s["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]),
    ("the memory limit is the revision's, with no swap beyond it",
     lambda s: s["linux"]["resources"]["memory"] == {"limit": 256 << 20, "swap": 256 << 20}),
    ("CPU is a CFS quota of cores x period", lambda s: s["linux"]["resources"]["cpu"] == {"quota": 50000, "period": 100000}),
    ("the cgroup path is the container's own", lambda s: s["linux"]["cgroupsPath"] == "/cairn/local.shop-test-0"),
    ("the first process is the init, then the app's argv", lambda s: s["process"]["args"] == [oci.INIT_PATH, "init", "python3", "app.py"]),
    ("the init is mounted read-only from the host's build", lambda s: "ro" in _mount(oci.INIT_PATH)["options"]
     and _mount(oci.INIT_PATH)["source"] == "/state/bin/cairn-shim-abc"),
    ("the user is the image's (or the configured) uid and gid", lambda s: s["process"]["user"] == {"uid": 1000, "gid": 1000}),
    ("a file mount is read-only", lambda s: "ro" in _mount("/etc/shop/app.conf")["options"]),
    ("a directory mount is read-write", lambda s: "rw" in _mount("/var/data")["options"]),
    ("bind mounts carry nosuid and nodev", lambda s: all({"nosuid", "nodev"} <= set(m["options"]) for m in s["mounts"] if m["type"] == "bind")),
    ("the environment has the variables and no secret", lambda s: s["process"]["env"] == ["PATH=/usr/bin", "LOG_LEVEL=debug"]),
    ("no terminal", lambda s: s["process"]["terminal"] is False),
    ("the root is writable unless read_only_root says otherwise", lambda s: s["root"]["readonly"] is False),
    ("a read-only root is mounted read-only and /tmp stays a writable tmpfs",
     lambda s: oci.spec(oci.ContainerSpec(**{**BASE.__dict__, "readonly_root": True}))["root"]["readonly"] is True
     and _mount("/tmp")["type"] == "tmpfs" and "ro" not in _mount("/tmp")["options"]),
])
def test_the_spec(rule: str, holds: Any) -> None:
    assert holds(SPEC), rule


def test_a_tiny_cpu_share_still_gets_the_kernel_minimum_quota() -> None:
    assert oci.spec(oci.ContainerSpec(**{**BASE.__dict__, "cpu": 0.001}))["linux"]["resources"]["cpu"]["quota"] == 1000


def test_an_exec_runs_as_the_container_with_the_secrets_only_in_its_process_spec() -> None:
    process = oci.exec_process(SPEC, ["sh", "-c", "true"], {"DB_PASSWORD": "hunter22"})
    assert process["args"] == ["sh", "-c", "true"]
    assert process["env"] == ["PATH=/usr/bin", "LOG_LEVEL=debug", "DB_PASSWORD=hunter22"]
    assert process["user"] == SPEC["process"]["user"] and process["capabilities"] == SPEC["process"]["capabilities"]
    assert "DB_PASSWORD=hunter22" not in json.dumps(SPEC), "the container's own spec never gets a secret"


# --- seccomp ---------------------------------------------------------------------------------------
PROFILE = seccomp.profile(oci.capabilities(0), machine="x86_64")
ALLOWED = {n for rule in PROFILE["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args") for n in rule["names"]}


@pytest.mark.parametrize(("rule", "holds"), [
    ("anything not listed is refused", lambda: PROFILE["defaultAction"] == "SCMP_ACT_ERRNO"),
    ("x86_64 with its 32-bit sub-architectures", lambda: PROFILE["architectures"][0] == "SCMP_ARCH_X86_64"),
    ("ordinary syscalls are allowed", lambda: {"read", "write", "openat", "execve", "fork", "socket", "mmap"} <= ALLOWED),
    ("clone only without new-namespace flags, as Docker allows it",
     lambda: any(r["names"] == ["clone"] and r["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" and r["args"][0]["value"] & 0x10000000
                 for r in PROFILE["syscalls"])),
    ("clone3 answers ENOSYS, so libc falls back to clone", lambda: {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
     in PROFILE["syscalls"]),
    ("no kernel modules without CAP_SYS_MODULE", lambda: not {"init_module", "finit_module", "delete_module"} & ALLOWED),
    ("no bpf or perf without CAP_SYS_ADMIN", lambda: not {"bpf", "perf_event_open"} & ALLOWED),
    ("no kexec, ever", lambda: not {"kexec_load", "kexec_file_load"} & ALLOWED),
    ("no ptrace-like peeking without CAP_SYS_PTRACE", lambda: not {"kcmp", "process_madvise"} & ALLOWED),
    ("no clock setting without CAP_SYS_TIME", lambda: not {"settimeofday", "clock_settime"} & ALLOWED),
    ("mount, setns and unshare only with CAP_SYS_ADMIN", lambda: not {"mount", "setns", "unshare", "umount2"} & ALLOWED),
    ("chroot is allowed: the default set has CAP_SYS_CHROOT", lambda: "chroot" in ALLOWED),
    ("arch_prctl is an amd64 rule that holds here", lambda: "arch_prctl" in ALLOWED),
    ("arm-only rules are left out", lambda: "breakpoint" not in ALLOWED),
])
def test_the_seccomp_profile(rule: str, holds: Any) -> None:
    assert holds(), rule


def test_a_container_with_sys_admin_would_get_its_syscalls() -> None:
    """The caps conditions are read, not ignored: the same profile for a CAP_SYS_ADMIN holder allows mount."""
    wider = seccomp.profile([*oci.capabilities(0), "CAP_SYS_ADMIN"], machine="x86_64")
    assert "mount" in {n for r in wider["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" for n in r["names"]}


# --- cgroups, v1 and v2 ----------------------------------------------------------------------------
V1_SELF = "12:memory:/agent.slice\n11:cpu,cpuacct:/agent.slice\n0::/agent.slice\n"
V2_SELF = "0::/system.slice/cairn-agent.service\n"


def _v2_root(tmp: Path) -> Path:
    (tmp / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    return tmp


@pytest.mark.parametrize(("case", "hierarchy", "self_cgroup", "expected"), [
    ("v1 nests under the agent's memory cgroup", 1, V1_SELF, "/agent.slice/cairn/local.a-0"),
    ("v2 nests under the agent's unified cgroup", 2, V2_SELF, "/system.slice/cairn-agent.service/cairn/local.a-0"),
    ("an agent in the root cgroup gets /cairn/<id>", 2, "0::/\n", "/cairn/local.a-0"),
])
def test_the_container_cgroup_path(case: str, hierarchy: int, self_cgroup: str, expected: str, tmp_path: Path) -> None:
    root = _v2_root(tmp_path) if hierarchy == 2 else tmp_path
    assert cgroups.version(root) == hierarchy, case
    assert cgroups.container_path("local.a-0", self_cgroup, root) == expected, case


@pytest.mark.parametrize(("case", "hierarchy", "file", "text", "kills"), [
    ("v1 counts oom_kill in memory.oom_control", 1, "memory/cairn/c/memory.oom_control",
     "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", 2),
    ("v2 counts oom_kill in memory.events", 2, "cairn/c/memory.events",
     "low 0\nhigh 0\nmax 14\noom 1\noom_kill 1\noom_group_kill 0\n", 1),
    ("v2 without a kill says 0", 2, "cairn/c/memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n", 0),
    ("a cgroup already removed says 0", 2, None, "", 0),
])
def test_oom_kills(case: str, hierarchy: int, file: str | None, text: str, kills: int, tmp_path: Path) -> None:
    root = _v2_root(tmp_path) if hierarchy == 2 else tmp_path
    if file:
        (root / file).parent.mkdir(parents=True)
        (root / file).write_text(text)
    assert cgroups.oom_kills("/cairn/c", root) == kills, case


def test_a_v2_host_without_the_memory_controller_is_named(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset io pids\n")
    problem = cgroups.problem(tmp_path)
    assert problem and "memory" in problem and "cpu" in problem
