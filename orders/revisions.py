"""An order's revision: frozen from the stored configuration when the order is made, found again
by the run's ``rev:`` tag on every re-run (a resume after a suspend, a retry), so a re-run ships the
exact revision it started with even if the configuration changed since."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future

from cairn.background import in_background
from cairn.blocks import api, documents, store
from cairn.config import ClusterSpec
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


def running(app: str, env: str) -> Revision | None:
    """The revision the environment runs now: that of its last completed release or rollback
    (None before the first). What an order's diff is against."""
    from cairn.orders import records

    last = records.last_completed(app, env)
    return revision_of_run(last.tags) if last else None


def changes_markdown(revision: Revision) -> str:
    """The order's diff against what runs now, as its table artifact's first block."""
    from cairn import diff

    now = running(revision.app, revision.environment)
    return diff.markdown(diff.revision_changes(now, revision), now)


Documents = tuple[Revision, tuple[ClusterSpec, str | None]]
_read_ahead: Future[tuple[str, str, Documents | None] | None] | None = None


def read_ahead(flow_run_id: str) -> None:
    """Start reading the run's revision and cluster documents now, in a process that is about to
    become the run's engine (the warm start's child): Prefect's engine spends a few hundred
    milliseconds on its pull steps and its Running state before the flow's body asks for them, and
    that read was the longest step between a run's start and its first batch (bench/RESULTS.md).
    The read is the same one the body would make; the body checks that it is for its own tags."""
    global _read_ahead

    def read() -> tuple[str, str, Documents | None] | None:
        run_tags = api.get(f"flow_runs/{flow_run_id}", "flow run").get("tags") or []
        prefix, cluster = tags.value(run_tags, tags.REV), tags.value(run_tags, tags.CLUSTER)
        return (prefix, cluster, documents.revision_and_cluster(prefix, cluster)) if prefix and cluster else None

    _read_ahead = in_background(read)


def _documents(prefix: str, cluster: str) -> Documents | None:
    ahead = _read_ahead
    if ahead is not None:
        try:
            answer = ahead.result()
        except Exception:  # noqa: BLE001 - a failed read ahead is only a missed head start: read again below
            answer = None
        if answer is not None and answer[:2] == (prefix, cluster):
            return answer[2]
    return documents.revision_and_cluster(prefix, cluster)


def revision_and_runtime(run_tags: Iterable[str]) -> Revision | None:
    """The run's revision, with its cluster's runtime connected: one request for both documents
    when the run's tags name both (orders `cairn release create` makes), two in a row otherwise."""
    run_tags = list(run_tags)
    prefix, cluster = tags.value(run_tags, tags.REV), tags.value(run_tags, tags.CLUSTER)
    found = _documents(prefix, cluster) if prefix and cluster else None
    if found is None or found[0].spec.cluster != cluster:
        return revision_of_run(run_tags)
    target(found[0], cluster_document=found[1])
    return found[0]
