"""cairn's block documents read as plain JSON, without importing Prefect (see ``cairn.blocks.api``).

The data of a stored block is the model ``cairn apply`` validated, so it is validated again into
the same core models (``EnvironmentSpec``, ``ClusterSpec``, ``Revision``); writes, and the Block
classes the UI's forms come from, stay in ``store`` and ``models``.
"""

from __future__ import annotations

from typing import Any

from cairn.blocks import api
from cairn.config import ClusterSpec, EnvironmentSpec
from cairn.errors import NotFound
from cairn.revision import Revision

HINT = "cairn apply -f FILE registers it; cairn app list shows what exists"


def _data(slug: str, name: str, what: str, *, secrets: bool = False) -> dict[str, Any]:
    try:
        doc = api.get(f"block_types/slug/{slug}/block_documents/name/{name}", what, include_secrets=str(secrets).lower())
    except NotFound:
        raise NotFound(f"no {what} named {name!r}", hint=HINT) from None
    return dict(doc["data"])


def environment_spec(app: str, environment: str) -> EnvironmentSpec:
    # The document name and slug are EnvironmentBlock's (blocks.models), kept in step by a test.
    data = _data("cairn-environment", f"{app}-{environment}", f"environment {environment} of app {app}")
    return EnvironmentSpec.model_validate(data["spec"])


def cluster(name: str) -> tuple[ClusterSpec, str | None]:
    """The cluster's spec and its kubeconfig (a secret field: read with secrets)."""
    data = _data("cairn-cluster", name, "cluster", secrets=True)
    kubeconfig = data.pop("kubeconfig", None)
    return ClusterSpec.model_validate({k: v for k, v in data.items() if k in ClusterSpec.model_fields}), kubeconfig


def revision(digest: str) -> Revision:
    return Revision.model_validate(_data("cairn-revision", f"rev-{digest[:32]}", "revision")["revision"])
