"""Prefect blocks that store cairn's configuration: clusters, apps, environments, revisions.

Each block wraps a core model from ``cairn.config`` as typed pydantic fields, so the Prefect UI
renders it as a form with titles and descriptions, and loading a block runs the same validation
as ``cairn apply``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cairn.blocks.models import AppBlock, ClusterBlock, EnvironmentBlock, RevisionBlock

__all__ = ["AppBlock", "ClusterBlock", "EnvironmentBlock", "RevisionBlock"]


def __getattr__(name: str) -> Any:
    # Lazy: the block classes import Prefect (~1.3 s of CPU); the CLI's reads use
    # ``cairn.blocks.documents`` and must not pay for it.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from cairn.blocks import models

    return getattr(models, name)
