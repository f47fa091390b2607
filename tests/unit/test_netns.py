"""Instance network namespaces: a stop removes only what is its own, even when repeated."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cairn.runtimes.local import netns

ADDRESS = "10.213.254.250"  # far above what the suites' agents hand out, so no live instance holds it


def _has_eth0(netns_file: Path) -> bool:
    shown = subprocess.run(["nsenter", f"--net={netns_file}", "ip", "-4", "addr", "show", "eth0"], capture_output=True, text=True)
    return shown.returncode == 0 and ADDRESS in shown.stdout


def test_a_second_stop_of_an_instance_leaves_the_next_holder_of_its_address_alone(tmp_path: Path) -> None:
    netns.ensure_bridge()
    first, second = tmp_path / "first", tmp_path / "second"
    netns.create(first, ADDRESS)
    try:
        assert _has_eth0(first)
        netns.delete(first)  # the shim's stop lets the address go ...
        netns.create(second, ADDRESS)  # ... another agent's instance takes it at once ...
        netns.delete(first)  # ... and the agent's own stop of the first runs after
        assert _has_eth0(second)
    finally:
        netns.delete(second)
    assert subprocess.run(["ip", "link", "show", netns.host_veth(ADDRESS)], capture_output=True).returncode != 0
