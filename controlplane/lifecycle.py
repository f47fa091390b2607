"""The platform's one start-up and shut-down: ``up()`` and ``down()``.

``cairn up``/``cairn down``, the test session's fixtures, ``make demo`` (through ``cairn up``) and
the benches all start the platform here, so it runs one way everywhere: the image registry
(``$CAIRN_HOME/registry``: the default registry short image names resolve to), the Prefect
server, then (this process pointed at it) the work pool and deployments, the warm start server
and the worker, then the local node agent. Each step reuses what already runs, so ``up()`` is idempotent
and a second call only fills in what is missing.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.controlplane import auth, processes
from cairn.paths import cairn_home, private_dir
from cairn.procs import ProcessRef


@dataclass(frozen=True)
class Platform:
    """What runs after ``up()``; the parts ``server_only`` left out are None (and no deployments)."""

    api_url: str
    home: Path  # $CAIRN_HOME: the Prefect home, the state file, the logs, the agent's state
    server: ProcessRef | None  # None for a server found answering at the recorded URL, its process unknown
    worker: ProcessRef | None = None
    warm_start: ProcessRef | None = None
    deployments: dict[str, str] = field(default_factory=dict)  # flow name -> deployment id
    agent: dict[str, Any] | None = None  # the agent's status (cairn.runtimes.local.agent_status)
    auth_from: str | None = None  # where the API's basic auth string is kept: a path or a variable, never the value
    registry: str | None = None  # 127.0.0.1:PORT of the platform's image registry

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def to_dict(self) -> dict[str, Any]:
        """``cairn up --json``: stable keys, for scripts."""
        return {
            "server": self.api_url, "ui": self.ui_url, "home": str(self.home),
            "server_pid": self.server.pid if self.server else None,
            "worker_pid": self.worker.pid if self.worker else None,
            "warm_start_pid": self.warm_start.pid if self.warm_start else None,
            "deployments": self.deployments, "agent": self.agent, "auth": self.auth_from, "registry": self.registry,
        }


def point_here(api_url: str) -> None:
    """Make this process a client of the platform at ``api_url`` (its Prefect home, API, auth,
    no telemetry), as every cairn process is. Prefect reads its settings when first imported; if
    it has been imported already, its global settings are read again."""
    os.environ.update(processes.prefect_env(api_url))
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def up(host: str = "127.0.0.1", port: int | None = None, max_running: int | None = None, *,
       server_only: bool = False) -> Platform:
    """Start what is not running of the platform under ``$CAIRN_HOME`` and describe what runs.

    ``host``/``port``: where the API and UI listen (behind basic auth, see ``auth``);
    ``max_running``: flow runs running at once (``processes.ensure_deployments``);
    ``server_only``: the Prefect server alone (tests that need no worker or agent).
    Leaves this process pointed at the platform (``point_here``). Without Debian's
    docker-registry nothing starts: a ``PermanentError`` says what to install."""
    from cairn.images import defaults, registry

    private_dir(cairn_home())  # before anything creates it with the default mode
    # First: an order's check resolves short image names against it, and it needs nothing else.
    # port None: 5000 when free (what a user types), else one the kernel picks.
    image_registry = registry.start(defaults.registry_dir())
    server = processes.ensure_server(port=port, host=host)
    point_here(server.url)
    platform = Platform(api_url=server.url, home=cairn_home(), server=server.process, auth_from=_auth_from(),
                        registry=image_registry)
    if server_only:
        return platform
    from dataclasses import replace

    from cairn.images import build
    from cairn.runtimes.local import start_agent

    build.seed(image_registry)  # cairn/python:3.11 and the demo app, so a first config resolves
    deployments = processes.ensure_deployments(max_running)
    warm = processes.ensure_warm_start(server.url)
    worker = processes.ensure_worker(server.url)
    return replace(platform, worker=worker, warm_start=warm, deployments=deployments, agent=start_agent())


def down(purge: bool = False) -> None:
    """Stop the worker and the warm start server, the Prefect server, the local agent and the
    image registry (its storage stays). Instances keep running (their shims own them) unless
    ``purge``, which also removes the agent's bridge: a purge is for a machine no other cairn
    agent shares. Idempotent."""
    from cairn.images import defaults, registry
    from cairn.runtimes.local import stop_agent

    processes.stop_worker()
    processes.stop_server()
    stop_agent(purge=purge)
    registry.stop(defaults.registry_dir())


def _auth_from() -> str | None:
    if not auth.configured():
        return None
    return str(auth.auth_file()) if auth.auth_file().exists() else auth.CLIENT_SETTING
