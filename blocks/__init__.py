"""Prefect blocks that store cairn's configuration: clusters, apps, environments, revisions.

Each block wraps a core model from ``cairn.config`` as typed pydantic fields, so the Prefect UI
renders it as a form with titles and descriptions, and loading a block runs the same validation
as ``cairn apply``.
"""

from cairn.blocks.models import AppBlock, ClusterBlock, EnvironmentBlock, RevisionBlock

__all__ = ["AppBlock", "ClusterBlock", "EnvironmentBlock", "RevisionBlock"]
