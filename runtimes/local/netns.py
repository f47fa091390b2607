"""Per-instance network namespaces on the agent's bridge, as a CNI bridge plugin wires pods.

Each instance gets its own namespace (so every instance listens on its container port at its
own address and ``localhost`` inside is its own), a veth pair whose host end joins the bridge
``cairn0``, and an address in 10.213.0.0/16, a range only these namespaces use. Instances get
no default route: they reach each other and the host, nothing else.

The namespace is pinned by a bind mount on a file in the instance's state directory
(``unshare --net=FILE``) rather than in /run/netns, so it lives with the instance's state.
"""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path

from cairn.errors import PermanentError

BRIDGE = "cairn0"
SUBNET = ipaddress.ip_network("10.213.0.0/16")
GATEWAY = "10.213.0.1"


def _ip(*args: str, netns: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", *args] if netns is None else ["nsenter", f"--net={netns}", "ip", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=15)
    if check and result.returncode != 0:
        raise PermanentError(
            f"network setup failed: {' '.join(argv)}: {result.stderr.strip()}",
            hint="the local runtime needs root, iproute2 and network namespaces",
        )
    return result


def ensure_bridge() -> None:
    if _ip("link", "show", BRIDGE, check=False).returncode != 0:
        added = _ip("link", "add", BRIDGE, "type", "bridge", check=False)
        if added.returncode != 0 and "exists" not in added.stderr:  # another agent on this machine won the race
            _ip("link", "add", BRIDGE, "type", "bridge")  # raises with the reason
    if GATEWAY not in _ip("-4", "addr", "show", BRIDGE).stdout:
        added = _ip("addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE, check=False)
        # Another agent may have added it meanwhile ("File exists", "Address already assigned").
        if added.returncode != 0 and GATEWAY not in _ip("-4", "addr", "show", BRIDGE).stdout:
            _ip("addr", "add", f"{GATEWAY}/{SUBNET.prefixlen}", "dev", BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def allocate(used: set[str]) -> str:
    """The lowest free instance address (10.213.0.x is left to the bridge)."""
    for host in SUBNET.hosts():
        text = str(host)
        if int(host) - int(SUBNET.network_address) < 256 or text.endswith((".0", ".255")) or text in used:
            continue
        return text
    raise PermanentError("no free address left in 10.213.0.0/16", hint="terminate instances you no longer need")


class AddressTaken(Exception):
    """Another agent's instance (another state directory on this machine) holds the address."""


def host_veth(address: str) -> str:
    # Named after the address, so the kernel's unique interface names make the address claim
    # machine-wide and atomic: two agents on one machine can never hand out the same address.
    third, fourth = address.split(".")[2:]
    return f"cn{int(third):03d}{int(fourth):03d}"


def mac_for(address: str) -> str:
    """A locally administered MAC that names the address: 10.213.1.2 -> 02:42:0a:d5:01:02."""
    return "02:42:" + ":".join(f"{int(octet):02x}" for octet in address.split("."))


def create(netns_file: Path, address: str) -> None:
    """Create the namespace pinned at ``netns_file`` with ``address`` on eth0."""
    veth, peer = host_veth(address), "cp" + host_veth(address)[2:]
    added = _ip("link", "add", veth, "type", "veth", "peer", "name", peer, check=False)
    if added.returncode != 0:
        if "exists" in added.stderr:
            raise AddressTaken(address)
        _ip("link", "add", veth, "type", "veth", "peer", "name", peer)  # raises with the reason
    netns_file.touch()
    result = subprocess.run(["unshare", f"--net={netns_file}", "true"], capture_output=True, text=True, timeout=15)
    if result.returncode != 0:
        _ip("link", "del", veth, check=False)
        raise PermanentError(f"cannot create a network namespace: {result.stderr.strip()}", hint="run the agent as root")
    _ip("link", "set", peer, "netns", str(netns_file))
    _ip("link", "set", veth, "master", BRIDGE, "up")
    _ip("link", "set", "lo", "up", netns=netns_file)
    _ip("link", "set", peer, "name", "eth0", netns=netns_file)
    # Addresses are reused as instances are replaced: a MAC derived from the address (as Docker
    # does) keeps the host's neighbour cache right, instead of sending to a gone veth for ~30 s.
    _ip("link", "set", "eth0", "address", mac_for(address), netns=netns_file)
    _ip("neigh", "flush", "to", address, check=False)
    _ip("addr", "add", f"{address}/{SUBNET.prefixlen}", "dev", "eth0", netns=netns_file)
    _ip("link", "set", "eth0", "up", netns=netns_file)


def delete(netns_file: Path) -> None:
    """Remove the instance's namespace and, from inside it, its veth pair.

    Never by the host end's name: once one stop of this instance has let the address go, another
    agent on this machine may already hold a veth of that name for its own instance (the name is
    the address), and a second stop would cut that instance off."""
    if netns_file.exists():
        _ip("link", "del", "eth0", netns=netns_file, check=False)
    subprocess.run(["umount", "-l", str(netns_file)], capture_output=True, timeout=15)
    netns_file.unlink(missing_ok=True)
