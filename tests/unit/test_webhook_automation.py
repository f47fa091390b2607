"""The webhook's automation without a server: what its run's parameters render to, and the event id."""

from __future__ import annotations

import uuid

from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

from cairn.orders import events as automations


def render(payload: dict[str, object]) -> dict[str, object]:
    """The parameters as the server's RunDeployment action renders them for an event with ``payload``."""
    action = automations.definition(uuid.uuid4()).actions[0]
    return hydrate(action.parameters, HydrationContext(render_jinja=True, jinja_context={"event": {"payload": payload}},
                                                       raise_on_error=True))


def test_parameters_come_from_the_payload_with_their_types() -> None:
    event = automations.release_event("d-1", "shop-api", "test", {"version": "v2", "batches": 3, "pause_mode": "none"})
    params = render(event.payload)
    assert params == {"app": "shop-api", "environment": "test", "version": "v2", "batches": 3, "pause_mode": "none",
                      "requested_by": "webhook:d-1"}
    assert isinstance(params["batches"], int)


def test_text_is_passed_verbatim_not_as_markup() -> None:
    assert render({**dict.fromkeys(automations.PARAMETERS, ""), "version": "a<b>&'c\""})["version"] == "a<b>&'c\""


def test_one_event_id_per_delivery() -> None:
    assert automations.event_id("d-1") == automations.event_id("d-1")
    assert automations.event_id("d-1") != automations.event_id("d-2")
    event = automations.release_event("d-1", "shop-api", "test", {})
    assert event.id == automations.event_id("d-1")
    assert event.resource.id == "cairn.app.shop-api.test"


def test_the_trigger_covers_release_requests_of_cairn_apps() -> None:
    trigger = automations.definition(uuid.uuid4()).trigger
    assert trigger.expect == {automations.EVENT} and trigger.threshold == 1
    assert trigger.match.matches(automations.release_event("d-1", "shop-api", "test", {}).resource)
