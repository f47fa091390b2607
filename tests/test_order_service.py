"""The release-order service: every door checks a request the same way, and checking stores nothing."""

from __future__ import annotations

import uuid

import pytest

from cairn.errors import ConfigError, Conflict, NotFound, PermanentError, TemporaryError
from tests.conftest import OciImages

pytestmark = [pytest.mark.prefect]


def _register(instances: int = 2, image: str = "cairn/demo-app:latest") -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = f"svc-{uuid.uuid4().hex[:8]}"
    env = {"cluster": "svc-a", "image": image, "instances": instances, "cpu": 0.1, "memory_mb": 64}
    store.apply(load_data({"clusters": [{"name": "svc-a"}, {"name": "svc-b"}],
                           "apps": [{"name": app, "deploy_type": "image", "environments": {"production": env}}]}))
    return app


def _revisions() -> set[str]:
    from cairn.blocks import store
    from cairn.blocks.models import RevisionBlock

    return set(store.list_block_names(RevisionBlock))


def test_checking_a_good_request_gives_its_revision_and_plan_and_stores_nothing(prefect_server: str, oci_images: OciImages) -> None:
    from cairn.orders.requests import ReleaseRequest, check

    app = _register(instances=5)
    before = _revisions()
    checked = check(ReleaseRequest.parse({"app": app, "environment": "production", "version": "v7", "batches": 2}))
    # The short name qualified with the default registry, the version's tag pinned to its digest.
    assert (checked.revision.version, checked.revision.image) == ("v7", oci_images.ref("cairn/demo-app:v7"))
    assert checked.revision.spec.image == f"{oci_images.registry}/cairn/demo-app:latest"
    assert [b.size for b in checked.plan.batches] == [2, 3]
    assert _revisions() == before


def test_more_batches_than_instances_is_refused_at_the_door_naming_batches(prefect_server: str) -> None:
    from cairn.orders.requests import ReleaseRequest, check

    app = _register(instances=2)
    before = _revisions()
    with pytest.raises(ConfigError) as err:
        check(ReleaseRequest.parse({"app": app, "environment": "production", "version": "v1", "batches": 3}), where="request")
    assert [f for f, _, _ in err.value.problems] == ["request.batches"]
    assert _revisions() == before


def test_an_environment_that_is_not_configured_is_not_found(prefect_server: str) -> None:
    from cairn.orders.requests import ReleaseRequest, check

    app = _register()
    with pytest.raises(NotFound):
        check(ReleaseRequest.parse({"app": app, "environment": "test", "version": "v1"}))


def test_a_refused_webhook_request_stores_no_revision(platform: str) -> None:
    from cairn.orders import events
    from cairn.webhook.server import Refusal, _check, parse

    app = _register(instances=2)
    before = _revisions()
    with pytest.raises(Refusal) as err:
        _check(parse(f'{{"app": "{app}", "environment": "production", "version": "v1", "batches": 5}}'.encode()),
               events.automation_id())
    assert err.value.status == 422 and [p["field"] for p in err.value.detail["problems"]] == ["batches"]
    _check(parse(f'{{"app": "{app}", "environment": "production", "version": "v1"}}'.encode()), events.automation_id())
    assert _revisions() == before


def test_an_environment_held_by_an_order_refuses_a_second_at_every_door(platform: str) -> None:
    from cairn.orders import actions, events, rules
    from cairn.plan import PauseMode
    from cairn.webhook.server import Refusal, _check, parse

    app = _register(instances=2)
    first = actions.create_order(app, "production", "v1", 2, PauseMode.FIRST_BATCH)
    try:
        assert rules.holders(app, "production")[0].id == uuid.UUID(first["id"])
        with pytest.raises(Conflict):
            actions.create_order(app, "production", "v2", 2, PauseMode.NONE)
        with pytest.raises(Refusal) as err:
            _check(parse(f'{{"app": "{app}", "environment": "production", "version": "v2"}}'.encode()), events.automation_id())
        assert err.value.status == 409 and first["id"] in err.value.reason
    finally:
        actions.close(first["id"])
    assert rules.holders(app, "production") == []


def test_an_order_pins_the_tag_and_a_moved_tag_leaves_the_rollback_on_the_old_bytes(
        prefect_server: str, oci_images: OciImages) -> None:
    """The order freezes the digest its tag points at; the tag moved after it, a new check pins the
    new bytes while the stored revision, which ``flows/rollback.py`` ships, still names the old."""
    from cairn.blocks import documents
    from cairn.images import build
    from cairn.orders.requests import ReleaseRequest, check
    from cairn.orders.revisions import revision_of_run, snapshot
    from cairn.orders.tags import REV

    app, tag = _register(), f"moving-{uuid.uuid4().hex[:6]}"
    old, new = oci_images.digests["cairn/demo-app:v1"], oci_images.digests["cairn/demo-app:v2"]
    build.push(build.DEFAULT_OUT, "cairn/demo-app:v1", oci_images.registry, as_name=f"cairn/demo-app:{tag}")
    request = ReleaseRequest.parse({"app": app, "environment": "production", "version": tag, "batches": 2})
    frozen = snapshot(request)  # what create_order and the release flow freeze
    assert frozen.image_digest == old
    assert frozen.image == f"{oci_images.registry}/cairn/demo-app:{tag}@{old}"

    build.push(build.DEFAULT_OUT, "cairn/demo-app:v2", oci_images.registry, as_name=f"cairn/demo-app:{tag}")
    again = check(request).revision
    assert again.image_digest == new and again.digest != frozen.digest
    stored = revision_of_run([f"{REV}{frozen.digest}"])  # how a rollback finds the order's revision
    assert stored == documents.revision(frozen.digest) == frozen
    assert stored is not None and stored.image_digest == old and stored.image.endswith(f"@{old}")


def test_a_version_without_a_tag_is_refused_naming_the_image_and_the_fix(prefect_server: str, oci_images: OciImages) -> None:
    from cairn.orders.requests import ReleaseRequest, check

    app = _register()
    before = _revisions()
    with pytest.raises(PermanentError) as err:
        check(ReleaseRequest.parse({"app": app, "environment": "production", "version": "never-pushed"}))
    assert f"{oci_images.registry}/cairn/demo-app:never-pushed" in err.value.message
    assert err.value.hint and "push" in err.value.hint
    assert _revisions() == before


def test_an_unreachable_registry_is_temporary(prefect_server: str) -> None:
    import socket

    from cairn.orders.requests import ReleaseRequest, check

    with socket.socket() as sock:  # a loopback port nothing listens on once released
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = _register(image=f"127.0.0.1:{port}/cairn/demo-app:latest")
    with pytest.raises(TemporaryError) as err:
        check(ReleaseRequest.parse({"app": app, "environment": "production", "version": "v1"}))
    assert f"127.0.0.1:{port}" in err.value.message and err.value.hint
