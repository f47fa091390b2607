"""The release-order service: every door checks a request the same way, and checking stores nothing."""

from __future__ import annotations

import uuid

import pytest

from cairn.errors import ConfigError, Conflict, NotFound

pytestmark = [pytest.mark.prefect]


def _register(instances: int = 2) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = f"svc-{uuid.uuid4().hex[:8]}"
    env = {"cluster": "svc-a", "image": "cairn/demo-app:latest", "instances": instances, "cpu": 0.1, "memory_mb": 64}
    store.apply(load_data({"clusters": [{"name": "svc-a"}, {"name": "svc-b"}],
                           "apps": [{"name": app, "deploy_type": "image", "environments": {"production": env}}]}))
    return app


def _revisions() -> set[str]:
    from cairn.blocks import store
    from cairn.blocks.models import RevisionBlock

    return set(store.list_block_names(RevisionBlock))


def test_checking_a_good_request_gives_its_revision_and_plan_and_stores_nothing(prefect_server: str) -> None:
    from cairn.orders.requests import ReleaseRequest, check

    app = _register(instances=5)
    before = _revisions()
    checked = check(ReleaseRequest.parse({"app": app, "environment": "production", "version": "v7", "batches": 2}))
    assert (checked.revision.version, checked.revision.image) == ("v7", "cairn/demo-app:v7")
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
