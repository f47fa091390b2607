"""The local runtime: instances as OCI containers run by runc on this machine.

A node agent (``agent``) owns the instances and serves the Runtime protocol over a unix
socket (``routes``, a Starlette app on uvicorn); ``LocalRuntime`` is its client. Images come
from an OCI registry into the agent's content-addressed store (``cairn.images.store``); each
instance is a container (``container``, ``oci``, ``runc``) beside a small native shim
(``shim.c``), supervised by a thread of the agent (``supervisor``).
The CLI calls ``start_agent``, ``stop_agent`` and ``agent_status``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cairn.runtimes.local.client import LocalRuntime
    from cairn.runtimes.local.control import agent_status, start_agent, stop_agent

__all__ = ["LocalRuntime", "agent_status", "start_agent", "stop_agent"]

_HOME = {"LocalRuntime": "client", "agent_status": "control", "start_agent": "control", "stop_agent": "control"}


def __getattr__(name: str) -> Any:
    # Lazy: the CLI imports parts of this package (runc, oci for a shell) and needs neither
    # the agent's code nor, for most commands, httpx: each import skipped shortens a command.
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
