"""The test cluster's registry hosts: which addresses its containerd may pull from, and how."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.runtimes.kubernetes.admission import hint
from tests.cluster import registries

TRUSTED = {
    "loopback v4 with port": "127.0.0.1:5000",
    "another loopback address": "127.0.0.2:41234",
    "localhost": "localhost:5000",
    "loopback v6": "[::1]:5000",
}
REFUSED = {
    "no port": "127.0.0.1",
    "port zero": "127.0.0.1:0",
    "port out of range": "127.0.0.1:70000",
    "a scheme": "http://127.0.0.1:5000",
    "a path": "127.0.0.1:5000/cairn",
    "off the machine": "10.223.0.1:5000",
    "a public name": "registry.example.com:443",
}


@pytest.mark.parametrize("address", TRUSTED.values(), ids=list(TRUSTED))
def test_a_loopback_registry_is_pulled_over_plain_http(address: str, tmp_path: Path) -> None:
    path = registries.trust(tmp_path, address)
    assert path == tmp_path / address / "hosts.toml"
    text = path.read_text()
    assert f'server = "http://{address}"' in text and f'[host."http://{address}"]' in text
    assert 'capabilities = ["pull", "resolve"]' in text, "pull only: the node never pushes"
    assert registries.trust(tmp_path, address) == path and path.read_text() == text, "idempotent"


@pytest.mark.parametrize("address", REFUSED.values(), ids=list(REFUSED))
def test_anything_but_a_loopback_host_port_is_refused(address: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="registry address"):
        registries.trust(tmp_path, address)
    assert not list(tmp_path.iterdir())


def test_a_missing_image_is_told_to_be_pushed_to_a_registry_not_imported() -> None:
    said = hint("image 127.0.0.1:5000/cairn/x:v1 is not present on the node and cannot be pulled (ErrImagePull: not found)")
    assert "push the image to a registry the nodes pull from" in said and "ctr" not in said
