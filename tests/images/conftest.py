"""Fixtures for the image tests: a real registry on loopback and the project's images in it.

One registry per test session, on a port the kernel picks (parallel sessions on one machine
never meet), with its state and storage in a temporary directory removed at the end.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.images import build, registry


@dataclass(frozen=True)
class Images:
    registry: str  # 127.0.0.1:PORT
    layout: Path
    manifests: dict[str, str]  # name in the layout -> manifest digest (as built)


@pytest.fixture(scope="session")
def image_tmp() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cairn-images-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def loopback_registry(image_tmp: Path) -> Iterator[str]:
    state = image_tmp / "registry"
    url = registry.start(state, port=0)
    yield url
    registry.stop(state)


@pytest.fixture(scope="session")
def images(loopback_registry: str, image_tmp: Path) -> Images:
    """Every project image built once and pushed under its own name."""
    built = build.build(image_tmp / "layout", ("v1", "v2"))
    for name in built.manifests:
        build.push(built.layout, name, loopback_registry)
    return Images(loopback_registry, built.layout, built.manifests)
