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
    return _cluster(_data("cairn-cluster", name, "cluster", secrets=True))


def _cluster(data: dict[str, Any]) -> tuple[ClusterSpec, str | None]:
    kubeconfig = data.pop("kubeconfig", None)
    return ClusterSpec.model_validate({k: v for k, v in data.items() if k in ClusterSpec.model_fields}), kubeconfig


def revision(digest: str) -> Revision:
    return Revision.model_validate(_data("cairn-revision", f"rev-{digest[:32]}", "revision")["revision"])


def revision_and_cluster(digest: str, cluster_name: str) -> tuple[Revision, tuple[ClusterSpec, str | None]] | None:
    """A revision and a cluster's spec and kubeconfig in one request (one round trip on a release's
    way to its first batch, where each costs 10-40 ms); None unless both exist."""
    names = {("cairn-revision", f"rev-{digest[:32]}"), ("cairn-cluster", cluster_name)}
    found = api.post("block_documents/filter", {
        "block_documents": {"name": {"any_": sorted(n for _, n in names)}},
        "block_types": {"slug": {"any_": sorted(t for t, _ in names)}},
        "include_secrets": True,
    }, "revision and cluster")
    by_name = {(d["block_type"]["slug"], d["name"]): dict(d["data"]) for d in found if (d["block_type"]["slug"], d["name"]) in names}
    if len(by_name) != 2:
        return None
    return (Revision.model_validate(by_name["cairn-revision", f"rev-{digest[:32]}"]["revision"]),
            _cluster(by_name["cairn-cluster", cluster_name]))
