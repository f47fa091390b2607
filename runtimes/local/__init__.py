"""The local runtime: instances as supervised, namespaced processes on this machine.

A node agent (``agent``) owns the instances and serves the Runtime protocol over a unix
socket; ``LocalRuntime`` is its client; one shim per instance (``shim``) supervises the app.
The CLI calls ``start_agent``, ``stop_agent`` and ``agent_status``.
"""

from cairn.runtimes.local.client import LocalRuntime
from cairn.runtimes.local.control import agent_status, start_agent, stop_agent

__all__ = ["LocalRuntime", "agent_status", "start_agent", "stop_agent"]
