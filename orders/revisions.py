"""An order's revision: frozen from the stored configuration when the order is made, found again
by the run's ``rev:`` tag on every re-run (a resume after a suspend, a retry), so a re-run ships the
exact revision it started with even if the configuration changed since."""

from __future__ import annotations

from collections.abc import Iterable

from cairn.blocks import documents, store
from cairn.orders import tags
from cairn.orders.requests import ReleaseRequest, check
from cairn.revision import Revision
from cairn.tasks.context import target


def freeze(revision: Revision) -> Revision:
    """Store the revision an order ships (an immutable block named by its digest)."""
    store.save_revision(revision)
    return revision


def snapshot(request: ReleaseRequest) -> Revision:
    """The checked request's revision, frozen: what a new order ships."""
    return freeze(check(request).revision)


def revision_of_run(run_tags: Iterable[str]) -> Revision | None:
    prefix = tags.value(run_tags, tags.REV)
    # The document read as JSON (``documents``): a Block load costs twice that, on the way to the first batch.
    return documents.revision(prefix) if prefix else None


def revision_and_runtime(run_tags: Iterable[str]) -> Revision | None:
    """The run's revision, with its cluster's runtime connected: one request for both documents
    when the run's tags name both (orders `cairn release create` makes), two in a row otherwise."""
    run_tags = list(run_tags)
    prefix, cluster = tags.value(run_tags, tags.REV), tags.value(run_tags, tags.CLUSTER)
    found = documents.revision_and_cluster(prefix, cluster) if prefix and cluster else None
    if found is None or found[0].spec.cluster != cluster:
        return revision_of_run(run_tags)
    target(found[0], cluster_document=found[1])
    return found[0]
