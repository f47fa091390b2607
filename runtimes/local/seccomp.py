"""The default seccomp profile of a local container: the one podman and CRI-O ship, in OCI form.

Debian's ``golang-github-containers-common`` (a dependency of skopeo, which the local runtime
needs anyway) installs it at ``/usr/share/containers/seccomp.json``: an allowlist of about 370
syscalls, the same rules as Docker's and containerd's defaults (Kubernetes' ``RuntimeDefault``).
It is written in Docker's format, whose rules hold only for some architectures or capability
sets; runc reads the OCI format. ``profile`` keeps the rules that hold for this machine's
architecture and the container's capabilities, so the result is what those runtimes apply.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from cairn.errors import PermanentError

PROFILE = Path("/usr/share/containers/seccomp.json")
# containers-common allows these to everyone and leaves the refusal to the kernel's capability
# checks; Docker's profile (and so Kubernetes' RuntimeDefault under Docker's rules) allows them
# only with CAP_SYS_ADMIN. Without it cairn refuses them at the syscall, as Docker does: an
# unprivileged user namespace (unshare -U) would otherwise hand a process capabilities again.
ADMIN_ONLY = frozenset({"mount", "umount", "umount2", "unshare", "setns", "pivot_root", "mount_setattr", "move_mount",
                        "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "clone", "clone3"})
# Docker's clone rule: any flags but the new-namespace ones (CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|
# NEWUSER|NEWPID|NEWNET); clone3, whose flags seccomp cannot read, answers ENOSYS so libc falls back.
_NAMESPACE_FLAGS = 0x7E020000
_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}


def _holds(condition: dict[str, Any], arch: str, caps: frozenset[str], *, excludes: bool) -> bool:
    """Whether a rule's ``includes`` (all must hold) or ``excludes`` (any excludes) matches."""
    arches = condition.get("arches") or []
    wanted = {c.upper() if c.upper().startswith("CAP_") else f"CAP_{c.upper()}" for c in condition.get("caps") or []}
    arch_name = arch.removeprefix("SCMP_ARCH_").lower().replace("x86_64", "amd64").replace("aarch64", "arm64")
    arch_hit = any(a in (arch_name, arch.lower(), arch) for a in arches)
    if excludes:
        return (bool(arches) and arch_hit) or (bool(wanted) and bool(wanted & caps))
    return (not arches or arch_hit) and (not wanted or wanted <= caps)


@lru_cache(maxsize=8)
def _load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except FileNotFoundError:
        raise PermanentError(f"no seccomp profile at {path}",
                             hint="apt-get install golang-github-containers-common (skopeo depends on it)") from None


def profile(capabilities: Iterable[str], path: Path = PROFILE, machine: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` for a container holding ``capabilities`` on this architecture
    (converted once per capability set: every instance's spec asks for it)."""
    return _profile(frozenset(capabilities), path, machine)


@lru_cache(maxsize=8)
def _profile(caps: frozenset[str], path: Path, machine: str | None) -> dict[str, Any]:
    source = _load(path)
    arch = _ARCH.get(machine or platform.machine())
    if arch is None:
        raise PermanentError(f"no seccomp architecture for {machine or platform.machine()}",
                             hint="the local runtime supports x86_64 and aarch64")
    architectures = [arch]
    for entry in source.get("archMap") or []:
        if entry.get("architecture") == arch:
            architectures += entry.get("subArchitectures") or []
    syscalls = []
    for rule in source.get("syscalls") or []:
        if not _holds(rule.get("includes") or {}, arch, caps, excludes=False):
            continue
        if _holds(rule.get("excludes") or {}, arch, caps, excludes=True):
            continue
        names = list(rule["names"])
        if "CAP_SYS_ADMIN" not in caps and rule["action"] == "SCMP_ACT_ALLOW":
            names = [n for n in names if n not in ADMIN_ONLY]
            if not names:
                continue
        kept: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            kept["args"] = [{k: a[k] for k in ("index", "value", "valueTwo", "op") if k in a} for a in rule["args"]]
        if rule.get("errnoRet") is not None:
            kept["errnoRet"] = rule["errnoRet"]
        syscalls.append(kept)
    if "CAP_SYS_ADMIN" not in caps:
        syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": _NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    result: dict[str, Any] = {"defaultAction": source.get("defaultAction", "SCMP_ACT_ERRNO"),
                              "architectures": architectures, "syscalls": syscalls}
    if source.get("defaultErrnoRet") is not None:
        result["defaultErrnoRet"] = source["defaultErrnoRet"]
    return result
