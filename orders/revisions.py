"""An order's revision: frozen from the stored configuration when the order is made, found again
by the run's ``rev:`` tag on every re-run (a resume after a suspend, a retry), so a re-run ships the
exact revision it started with even if the configuration changed since."""

from __future__ import annotations

from cairn.blocks import documents, store
from cairn.orders import records
from cairn.revision import Revision
from cairn.tasks.context import target


def snapshot(app: str, environment: str, version: str) -> Revision:
    """The revision an order ships: the environment's stored configuration and the version, frozen."""
    from cairn import packages

    app_block = store.load_app(app)
    env_block = store.load_environment(app, environment)
    package_digest = packages.resolve(app, version).digest if app_block.deploy_type == "code-package" else None
    revision = Revision(app=app, environment=env_block.environment, deploy_type=app_block.deploy_type,
                        version=version, spec=env_block.spec, package_digest=package_digest)
    store.save_revision(revision)
    return revision


def _tag(tags: list[str], prefix: str) -> str | None:
    return next((t[len(prefix):] for t in tags if t.startswith(prefix)), None)


def revision_of_run(tags: list[str]) -> Revision | None:
    prefix = _tag(tags, records.REV_TAG)
    # The document read as JSON (``documents``): a Block load costs twice that, on the way to the first batch.
    return documents.revision(prefix) if prefix else None


def revision_and_runtime(tags: list[str]) -> Revision | None:
    """The run's revision, with its cluster's runtime connected: one request for both documents
    when the run's tags name both (orders `cairn release create` makes), two in a row otherwise."""
    prefix, cluster = _tag(tags, records.REV_TAG), _tag(tags, records.CLUSTER_TAG)
    found = documents.revision_and_cluster(prefix, cluster) if prefix and cluster else None
    if found is None or found[0].spec.cluster != cluster:
        return revision_of_run(tags)
    target(found[0], cluster_document=found[1])
    return found[0]
