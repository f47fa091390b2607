"""The default registry, and short image names qualified with it.

Configuration may say ``cairn/python:3.11`` (no registry host). Such a name means the default
registry's image: ``$CAIRN_REGISTRY`` when set (a test session, or a user's own registry),
else the registry ``cairn up`` runs under ``$CAIRN_HOME/registry``. The order qualifies the
name once, when it snapshots the revision, so the revision names a full reference and every
later reader (a rollback a month on, another machine) reads the same registry.
"""

from __future__ import annotations

import os
from pathlib import Path

from cairn.errors import ConfigError
from cairn.imageref import Reference, is_short
from cairn.images import registry
from cairn.paths import cairn_home

ENV_VAR = "CAIRN_REGISTRY"


def registry_dir() -> Path:
    """Where ``cairn up`` keeps the platform's registry (state, config, storage)."""
    return cairn_home() / "registry"


def default_registry() -> str | None:
    """``host:port`` of the default registry, or None when there is none."""
    configured = os.environ.get(ENV_VAR, "").strip()
    if configured:
        return configured
    return registry.address(registry_dir())


def qualify(image: str, field: str = "image") -> Reference:
    """``image`` as a full reference: a short name gets the default registry; a full one is
    parsed as it is. The tag may be missing (deploy type image: the version is the tag)."""
    if not is_short(image.partition("@")[0]):
        return Reference.parse(image, field=field, tagless=True)
    found = default_registry()
    if found is None:
        raise ConfigError.single(
            field, image,
            f"a short image name needs a default registry: run `cairn up` (it starts one), set {ENV_VAR}=host:port, "
            "or write the full reference registry/name:tag",
        )
    try:
        return Reference.parse(image, field=field, default_registry=found, tagless=True)
    except ConfigError as exc:
        if exc.problems[0][0] == "registry":  # the default itself is malformed: name where it came from
            raise ConfigError.single(ENV_VAR, found, "a registry is host[:port], e.g. 127.0.0.1:5000") from None
        raise
