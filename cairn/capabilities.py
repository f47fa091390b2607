"""The Linux capabilities an instance's processes hold, on every runtime (names without ``CAP_``).

One rule for both runtimes, so an app is exactly as privileged on a laptop as in a pod. The sets
are written out rather than left to a runtime's default (CRI-O's differs from containerd's):

- an app running as root keeps runc's and containerd's default set minus NET_RAW, the one Pod
  Security "baseline" refuses (raw sockets forge packets on the instances' network); baseline
  admits the rest;
- a non-root app gets only NET_BIND_SERVICE, all that "restricted" admits: with no privilege
  escalation a non-root process can use no other capability anyway.
"""

from __future__ import annotations

ROOT = ("AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
        "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT")
NON_ROOT = ("NET_BIND_SERVICE",)


def for_uid(uid: int) -> tuple[str, ...]:
    """The set for a process running as ``uid``.

    >>> for_uid(1000)
    ('NET_BIND_SERVICE',)
    >>> "NET_RAW" in for_uid(0)
    False
    """
    return ROOT if uid == 0 else NON_ROOT
