"""Test session setup: one CAIRN_HOME, one real Prefect server (SQLite), one image registry
(CAIRN_HOME/registry, the project's images pushed once), shared by every test.

The environment is fixed in ``pytest_configure``, before any test module imports Prefect,
because Prefect reads its settings (API URL, home) when it is first imported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.cluster.fixture"]


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CAIRN_TEST_SESSION"):
        return
    home = Path(tempfile.mkdtemp(prefix="cairn-test-"))
    os.environ["CAIRN_TEST_SESSION"] = "1"
    os.environ["CAIRN_HOME"] = str(home)
    from cairn.controlplane import auth
    from cairn.controlplane.processes import free_port, prefect_env

    auth.ensure()  # the session's clients send it from the start, as the platform's own processes do
    port = free_port(4300)
    os.environ.update(prefect_env(f"http://127.0.0.1:{port}/api"))
    config._cairn_home = home  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    home = getattr(config, "_cairn_home", None)
    if home is None:
        return
    from cairn.controlplane import down

    down(purge=True)
    if not os.environ.get("CAIRN_KEEP_TEST_HOME"):
        shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class OciImages:
    """The session's registry and what is in it."""

    registry: str  # 127.0.0.1:PORT
    digests: dict[str, str]  # short name (cairn/demo-app:v1) -> manifest digest

    def ref(self, short: str) -> str:
        """``short`` in the session's registry, pinned: ``127.0.0.1:PORT/cairn/demo-app:v1@sha256:...``."""
        return f"{self.registry}/{short}@{self.digests[short]}"


@pytest.fixture(scope="session")
def oci_images() -> OciImages:
    """The one registry of the session, where `cairn up` keeps it (CAIRN_HOME/registry) on a port
    the kernel picks, with cairn/python:3.11 and cairn/demo-app:v1..v9 pushed (built into the
    shared cache /var/cache/cairn/images/layout, reused while the builder's inputs are unchanged:
    the build is reproducible). CAIRN_REGISTRY names it for this process and its children; every
    other process of the session finds it through CAIRN_HOME. ``pytest_unconfigure``'s ``down``
    stops it."""
    from cairn.images import build, defaults, registry

    address = registry.start(defaults.registry_dir(), port=0)
    pushed = build.build_and_push(address, build.TEST_VERSIONS)
    os.environ[defaults.ENV_VAR] = address
    return OciImages(address, {name.removeprefix(f"{address}/"): digest for name, digest in pushed.items()})


@pytest.fixture(scope="session")
def prefect_server(oci_images: OciImages) -> Iterator[str]:
    """A real Prefect server (SQLite, all services) on the port chosen at configure time: the
    platform's own start-up (``cairn.controlplane.up``): the registry (``oci_images``) and the server."""
    from cairn.controlplane import up

    url = os.environ["PREFECT_API_URL"]
    assert up(port=_port(url), server_only=True).api_url == url
    yield url


@pytest.fixture
def cli(prefect_server: str):  # type: ignore[no-untyped-def]
    """Run ``cairn`` as a user would: a subprocess with the session's environment."""
    import subprocess
    import sys

    def run(*args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "cairn.cli.main", *args], input=input, capture_output=True, text=True, timeout=300,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"cairn {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def platform(prefect_server: str, oci_images: OciImages) -> str:
    """The whole platform as `cairn up` runs it (``cairn.controlplane.up``): the session's server,
    with deployments, the warm start server, a process worker and the local agent."""
    from cairn.controlplane import up

    running = up(port=_port(prefect_server))
    assert running.api_url == prefect_server and running.worker and running.agent and running.agent["running"], running
    return prefect_server


def _port(api_url: str) -> int:
    return int(api_url.rsplit(":", 1)[1].split("/")[0])
