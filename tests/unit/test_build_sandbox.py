"""A build container's OCI spec (runtimes/local/sandbox.py): what the build can see and hold."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.runtimes.local import oci, sandbox

BOX = sandbox.BuildBox(rootfs="/ws/container/rootfs", workdir="/ws/build", argv=["sh", "-c", "make"], cwd="/build/src",
                       env={"HOME": "/build/home"}, network="none", memory_bytes=512 << 20, cpu=0.5,
                       cgroups_path="/cairn/build.x", init_binary="/state/bin/cairn-shim", resolv_conf="/etc/resolv.conf")


def _spec(**change: Any) -> dict[str, Any]:
    from dataclasses import replace

    return sandbox.spec(replace(BOX, **change))


def _binds(spec: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [(m["source"], m["destination"], m["options"]) for m in spec["mounts"] if m["type"] == "bind"]


@pytest.mark.parametrize("check", [
    pytest.param(lambda s: [(src, dst) for src, dst, _ in _binds(s)] == [("/state/bin/cairn-shim", oci.INIT_PATH), ("/ws/build", "/build")],
                 id="the workspace is the only host directory mounted, beside the read-only init"),
    pytest.param(lambda s: s["root"] == {"path": "/ws/container/rootfs", "readonly": True}, id="the root is read-only"),
    pytest.param(lambda s: s["process"]["user"] == {"uid": 65534, "gid": 65534}, id="the build runs as nobody"),
    pytest.param(lambda s: all(v == [] for v in s["process"]["capabilities"].values()) and len(s["process"]["capabilities"]) == 5,
                 id="the build holds no capability in any set"),
    pytest.param(lambda s: s["process"]["noNewPrivileges"] is True, id="no setuid binary gives privileges back"),
    pytest.param(lambda s: s["linux"]["seccomp"]["defaultAction"] == "SCMP_ACT_ERRNO"
                 and not any(n in r["names"] for r in s["linux"]["seccomp"]["syscalls"] if r["action"] == "SCMP_ACT_ALLOW"
                             and not r.get("args") for n in ("mount", "umount2", "unshare", "setns", "pivot_root")),
                 id="seccomp refuses mount, unshare, setns and pivot_root"),
    pytest.param(lambda s: {n["type"] for n in s["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "cgroup", "network"}
                 and all("path" not in n for n in s["linux"]["namespaces"]),
                 id="network none is a new network namespace of its own, as are pid, ipc, uts, mount and cgroup"),
    pytest.param(lambda s: s["linux"]["resources"]["memory"] == {"limit": 512 << 20, "swap": 512 << 20}
                 and s["linux"]["resources"]["cpu"]["quota"] == 50_000 and s["linux"]["resources"]["pids"]["limit"] > 0,
                 id="memory without swap, CPU and pids are limited"),
    pytest.param(lambda s: s["process"]["args"] == [oci.INIT_PATH, "init", "sh", "-c", "make"] and s["process"]["cwd"] == "/build/src",
                 id="the init starts the command in the checkout"),
    pytest.param(lambda s: "/etc/resolv.conf" not in [m["destination"] for m in s["mounts"]],
                 id="without a network the host's resolver configuration is not mounted"),
])
def test_network_none_build(check: Any) -> None:
    assert check(sandbox.spec(BOX))


def test_network_host_shares_only_the_network_and_the_resolver() -> None:
    spec = _spec(network="host")
    assert "network" not in {n["type"] for n in spec["linux"]["namespaces"]}
    assert ("/etc/resolv.conf", "/etc/resolv.conf", ["rbind", "nosuid", "nodev", "ro"]) in _binds(spec)
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "cgroup"}


def test_no_secret_in_the_spec() -> None:
    spec = sandbox.spec(BOX)
    assert [e for e in spec["process"]["env"] if not e.startswith("HOME=")] == [], "secrets travel on fd 3, never in config.json"
