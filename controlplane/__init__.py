"""The control plane on one machine: the Prefect server, the worker, warm starts, auth, the deployments.

``up()`` starts it (or what of it is not running) and returns a ``Platform`` describing what
runs; ``down()`` stops it (``lifecycle``). ``connection`` finds the platform a command talks to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cairn.controlplane.lifecycle import Platform, down, up

__all__ = ["Platform", "down", "up"]


def __getattr__(name: str) -> Any:
    # Lazy: the warm start server and ``cairn --help`` import this package and need none of it.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from cairn.controlplane import lifecycle

    return getattr(lifecycle, name)
