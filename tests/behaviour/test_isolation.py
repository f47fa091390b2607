"""From inside an instance, the host and the other instances are out of reach (issue 17).

Each probe is one shell command run in an instance with ``exec`` (busybox tools of the image) and
the verdict it must get: ``refused`` (the command fails: a missing path, EPERM), or ``prints``
exactly a given text (the probe judges what it sees: the pids of foreign processes, capability
bits). Whatever a probe prints, none of the values planted outside the instance may appear in it:
a host file's content, a host process's environment, the other instance's secret, the host's
password hashes. Both runtimes answer the same table: runc's defaults on local, the pod security
context (runtimes/kubernetes/manifests.py) on kubernetes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# What a container's /dev holds: the OCI runtime's standard devices and links, the pseudo-terminal
# and shared-memory mounts, and Kubernetes' termination log. Nothing of the host's (no sda, kmsg, mem).
STANDARD_DEV = ("null", "zero", "full", "random", "urandom", "tty", "console", "ptmx", "pts", "shm", "mqueue", "fd",
                "stdin", "stdout", "stderr", "core", "termination-log")
SECRET_VAR = "PROBE_SECRET"


@dataclass(frozen=True)
class Probe:
    name: str
    command: str  # for sh -c inside the instance; {field} names one of Planted's (other braces stay)
    verdict: str  # "refused", or "prints:<text>" (stdout, stripped)
    host_absent: str = ""  # a host path that must not exist afterwards (a write that escaped)


# Capability bits: 13 NET_RAW, 16 SYS_MODULE, 19 SYS_PTRACE, 21 SYS_ADMIN, of the app (pid 1) and of this shell,
# effective and bounding (so none can be gained back): one digit each.
_CAPS = ("for f in /proc/1/status /proc/self/status; do for k in CapEff CapBnd; do "
         "e=$(( 0x$(grep \"^$k:\" $f | cut -f2) )); printf '%d%d%d%d' $(( (e>>13)&1 )) $(( (e>>16)&1 )) $(( (e>>19)&1 )) $(( (e>>21)&1 )); "
         "done; done")

# Shared with the build container's probes (tests/test_build.py): the pids in /proc that are not
# this probe's own shell tools, and any host process's environment marker that can be read.
OTHER_PIDS = ("for p in $(ls /proc | grep '^[0-9]'); do c=$(cat /proc/$p/comm 2>/dev/null) || continue; "
              "case \"$c\" in sh|ls|grep|cat|'') ;; *) echo $p;; esac; done")
HOST_ENVIRON = "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep '^CAIRN_PROBE_MARKER='; true"

PROBES = [
    # processes
    Probe("ps lists the app (pid 1) and this probe, no other instance's or host process",
          "ps -o pid,comm | awk 'NR>1 && $2!=\"ps\" && $2!=\"awk\" && $2!=\"sh\" {print $1}'", "prints:1"),
    Probe("/proc holds only the instance's own pids",
          OTHER_PIDS, "prints:1"),
    Probe("pid 1 is the app, not the host's init", "tr '\\0' ' ' < /proc/1/cmdline | cut -d' ' -f1 | sed 's|.*/||'",
          "prints:python3"),
    Probe("every environ readable is the instance's own (no host or other instance's values)",
          f"cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep '^{SECRET_VAR}=' | sort -u", f"prints:{SECRET_VAR}={{own_secret}}"),
    Probe("no host process's environment is readable",
          HOST_ENVIRON, "prints:"),
    Probe("/proc/1/environ is the app's, holding its own secret", f"tr '\\0' '\\n' < /proc/1/environ | grep '^{SECRET_VAR}='",
          f"prints:{SECRET_VAR}={{own_secret}}"),
    # the platform's state
    Probe("CAIRN_HOME is absent", "ls -d {cairn_home}", "refused"),
    Probe("the Prefect database is absent", "cat {prefect_db}", "refused"),
    Probe("the control socket (local agent's, kubernetes node's containerd) is absent", "ls -l {control_socket}", "refused"),
    Probe("no service account token", "ls /var/run/secrets/kubernetes.io", "refused"),
    # kernel powers
    Probe("mount -t tmpfs fails", "mkdir -p /tmp/probe-mnt && mount -t tmpfs none /tmp/probe-mnt", "refused"),
    Probe("no kernel modules to load", "ls /lib/modules", "refused"),
    Probe("NET_RAW, SYS_MODULE, SYS_PTRACE and SYS_ADMIN are clear, effective and bounding", _CAPS, "prints:" + "0" * 16),
    Probe("nsenter into pid 1's namespaces fails", "nsenter -t 1 -m -u -i -n -p true", "refused"),
    Probe("unshare of a mount namespace fails", "unshare -m true", "refused"),
    Probe("unshare of a user namespace (root mapped) fails", "unshare -U -r true", "refused"),
    Probe("/proc/sys is read-only", "echo 1 > /proc/sys/vm/drop_caches", "refused"),
    # the host's devices and files
    Probe("/dev holds only the standard container devices",
          "ls /dev | grep -v -x -E '" + "|".join(STANDARD_DEV) + "' | tr '\\n' ' '", "prints:"),
    Probe("no host disk, kernel log or memory device", "ls -d /dev/sda /dev/vda /dev/kmsg /dev/mem 2>/dev/null; true", "prints:"),
    Probe("a block device made with mknod cannot be opened", "mknod /tmp/probe-sda b 8 0 && head -c1 /tmp/probe-sda", "refused"),
    Probe("a file written on the host is not visible", "cat {host_file}", "refused"),
    Probe("the project checkout is absent", "ls -d {checkout}", "refused"),
    Probe("the host's /etc/shadow is absent (the image has none)", "cat /etc/shadow", "refused"),
    # writes
    Probe("a write to / stays in the instance's layer", "echo probe > /{write_name} || true; true", "prints:",
          host_absent="/{write_name}"),
]


@dataclass(frozen=True)
class Planted:
    """What the test puts outside the instance, and what the probes are told about it."""

    cairn_home: str
    prefect_db: str
    control_socket: str
    host_file: str
    checkout: str
    write_name: str
    own_secret: str
    leaks: tuple[str, ...]  # values that must never show inside


@pytest.fixture
def host_file() -> Iterator[Path]:
    """A file on the host outside /tmp (which runtimes often mount private, hiding a leak there)."""
    directory = Path("/var/tmp") / f"cairn-probe-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    path = directory / "marker.txt"
    path.write_text(f"host-file-{uuid.uuid4().hex}")
    yield path
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def host_process() -> Iterator[str]:
    """A process of the host with a marker in its environment: a probe reading every environ it can
    would print it."""
    marker = f"host-env-{uuid.uuid4().hex}"
    proc = subprocess.Popen(["sleep", "600"], env={"PATH": "/usr/bin:/bin", "CAIRN_PROBE_MARKER": marker})
    yield marker
    proc.kill()
    proc.wait()


def _shadow_hashes() -> list[str]:
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return []
    return [f[1] for f in (line.split(":") for line in lines) if len(f) > 1 and len(f[1]) > 3]


def _fill(text: str, planted: Planted) -> str:
    fields = {k: v for k, v in planted.__dict__.items() if isinstance(v, str)}
    return re.sub(r"\{(\w+)\}", lambda m: fields.get(m[1], m[0]), text)


def _verdict_of(probe: Probe, planted: Planted, exit_code: int, stdout: str) -> str | None:
    """None when the probe got what it must; else what it got instead."""
    want = _fill(probe.verdict, planted)
    if want == "refused":
        return None if exit_code != 0 else f"exit 0 (not refused), printed {stdout.strip()[:300]!r}"
    text = want.removeprefix("prints:")
    if exit_code != 0:
        return f"exit {exit_code}, printed {stdout.strip()[:300]!r}"
    return None if stdout.strip() == text else f"printed {stdout.strip()[:300]!r}, not {text!r}"


def test_an_instance_reaches_neither_the_host_nor_another_instance(runtime: Harness, host_process: str,
                                                                 host_file: Path) -> None:
    own, other = f"own-{uuid.uuid4().hex}", f"other-{uuid.uuid4().hex}"
    envs = {own: runtime.env("iso"), other: runtime.env("iso-other")}
    for value, env in envs.items():
        runtime.ensure(env, [0], runtime.revision(env, secret_env={SECRET_VAR: "probe-secret"}),
                       secrets={SECRET_VAR: value})
    [mine] = runtime.wait_ready(envs[own], 1)
    runtime.wait_ready(envs[other], 1)  # running beside it while it is probed

    home = Path(os.environ["CAIRN_HOME"])
    # The socket that drives instances on this machine: the local agent's, or the node's containerd.
    socket = str(runtime.state_dir / "agent.sock") if runtime.state_dir else runtime.k8s.containerd_socket  # type: ignore[attr-defined]
    planted = Planted(
        cairn_home=str(home), prefect_db=str(home / "prefect" / "prefect.db"), control_socket=socket,
        host_file=str(host_file), checkout=str(ROOT), write_name=f"cairn-probe-{uuid.uuid4().hex[:8]}",
        own_secret=own, leaks=(host_file.read_text(), host_process, other, *_shadow_hashes()),
    )
    assert Path(planted.control_socket).exists(), f"the probe must name a socket that is there: {planted.control_socket}"

    failures: list[str] = []
    for probe in PROBES:
        command = _fill(probe.command, planted)
        result = runtime.runtime.exec(envs[own], mine.name, ["sh", "-c", command], user="probe", timeout_s=20)
        wrong = _verdict_of(probe, planted, result.exit_code, result.stdout)
        leaked = [v[:16] + "..." for v in planted.leaks if v in result.stdout or v in result.stderr]
        escaped = Path(_fill(probe.host_absent, planted)) if probe.host_absent else None
        if escaped is not None and escaped.exists():
            escaped.unlink()
            wrong = f"{escaped} appeared on the host"
        if wrong or leaked:
            failures.append(f"{probe.name}: `{command}` {wrong or ''}{' leaked ' + ', '.join(leaked) if leaked else ''}")
    assert not failures, f"{len(failures)} of {len(PROBES)} probes reached beyond the instance ({runtime.kind}):\n  " + \
        "\n  ".join(failures)

