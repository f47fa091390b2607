"""The registries the real node's containerd pulls from: one ``hosts.toml`` per ``host:port``.

containerd's CRI plugin reads ``config_path`` (containerd.py points it at ``hosts_dir``) afresh
at every pull, so a registry is added while the cluster runs, without a restart: the test
session starts its registry on a random loopback port and calls ``trust`` with the address
(``K8sClusters.pull_from``). Only loopback registries are trusted, over plain HTTP: the same
registry the local runtime pulls from, on this machine, so both runtimes run the same digests;
a registry elsewhere would want TLS, which this test cluster has no use for.

Standard library only, no sibling imports: loaded both by plain name (cluster.py's modules) and
as ``tests.cluster.registries`` (the pytest fixture).
"""

from __future__ import annotations

import ipaddress
import pathlib
import re

_ADDRESS = re.compile(r"^(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(?P<port>[0-9]{1,5})$")


def hosts_dir(state: pathlib.Path) -> pathlib.Path:
    """containerd's ``config_path`` under the state dir of cluster a (``down`` removes it)."""
    return state / "a" / "containerd" / "certs.d"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def hosts_toml(address: str) -> str:
    """containerd's hosts.toml for the plain-HTTP registry at ``address`` (``127.0.0.1:PORT``)."""
    m = _ADDRESS.match(address)
    if not m or not 0 < int(m["port"]) < 65536:
        raise ValueError(f"registry address {address!r}: write host:port, e.g. 127.0.0.1:5000")
    if not _loopback(m["host"]):
        raise ValueError(f"registry address {address!r}: the node pulls over plain HTTP from loopback only")
    return (f'# Written by tests/cluster/registries.py: containerd pulls {address} over plain HTTP.\n'
            f'server = "http://{address}"\n\n'
            f'[host."http://{address}"]\n'
            '  capabilities = ["pull", "resolve"]\n')


def trust(directory: pathlib.Path, address: str) -> pathlib.Path:
    """Let containerd pull from ``address``; idempotent. Returns the hosts.toml written."""
    text = hosts_toml(address)
    path = directory / address / "hosts.toml"
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)  # a pull reading the directory meanwhile sees the old file or the new, never half
    return path
