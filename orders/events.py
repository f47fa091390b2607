"""The webhook's way into Prefect: one event per delivery, and an automation that runs a release.

``cairn webhook serve`` verifies a request, then posts a ``cairn.release.requested`` event about
the resource ``cairn.app.<app>.<environment>`` with the release in its payload. The automation
``cairn-webhook-release`` (created by ``cairn up`` with the deployments) reacts to each such
event by running the ``release`` deployment, its parameters templated from the payload: the
order is then an ordinary flow run that snapshots its revision, guards its environment and tags
itself, with ``requested_by`` = ``webhook:<delivery>`` recorded as its ``by:`` tag.

At most one release per delivery id:
- the event's id is derived from the delivery (uuid5), and Prefect's triggers service skips an
  event id it has already seen (for 30 minutes, in the server's memory): duplicates that reach
  the server anyway, from several webhook processes say, fire nothing;
- before posting, the webhook looks for the run a delivery started (``run_of``): its ``by:`` tag
  once it runs, its parameters while it waits for the worker. That is what keeps a replay out
  after the 30 minutes or a server restart;
- Prefect never retries an action that failed (a busy SQLite answers its create with a 503) and
  says so with a ``prefect.automation.action.failed`` event: only then may the delivery be posted
  again, as its next attempt (another derived id).
"""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import TYPE_CHECKING, Any

from cairn.errors import NotFound
from cairn.orders import records, tags

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

EVENT = "cairn.release.requested"
AUTOMATION = "cairn-webhook-release"
RESOURCE_PREFIX = "cairn.app."
# The release parameters an event carries; the automation maps each one from the payload.
PARAMETERS = ("app", "environment", "version", "batches", "pause_mode", "requested_by")
_DELIVERIES = uuid.uuid5(uuid.NAMESPACE_URL, "cairn:webhook-delivery")


def actor(delivery: str) -> str:
    """Who asked for a webhook's order: recorded as the run's ``by:`` tag."""
    return f"webhook:{delivery}"


def event_id(delivery: str, attempt: int = 1) -> uuid.UUID:
    """One event id per delivery (and attempt), whatever process posts it and however often.

    A later attempt is only posted once Prefect reported the earlier one's action failed
    (``next_attempt``): Prefect never retries a failed action, so that is still at most once."""
    return uuid.uuid5(_DELIVERIES, delivery if attempt == 1 else f"{delivery}#{attempt}")  # '#' is no delivery character


def action_failure(event: uuid.UUID) -> str | None:
    """Why the automation could not act on ``event``, if Prefect says so (``None`` otherwise, also
    while it has not acted yet). A busy SQLite, for one, answers the action's create with a 503."""
    from datetime import datetime, timedelta

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventRelatedFilter

    flt = EventFilter(occurred=EventOccurredFilter(since=datetime.now(UTC) - timedelta(days=7)),
                      event=EventNameFilter(name=["prefect.automation.action.failed"]),
                      related=EventRelatedFilter(id=[f"prefect.event.{event}"]))
    with get_client(sync_client=True) as client:
        page = client.request("POST", "/events/filter", json={"filter": flt.model_dump(mode="json"), "limit": 1}).json()
    failed = page.get("events") or []
    return str(failed[0].get("payload", {}).get("reason") or "the automation's action failed") if failed else None


def next_attempt(delivery: str) -> int:
    """The attempt to post for ``delivery``: the first whose action did not fail (usually 1)."""
    attempt = 1
    while action_failure(event_id(delivery, attempt)) is not None:
        attempt += 1
    return attempt


def _from_payload(name: str) -> dict[str, Any]:
    # A Jinja template renders to a string; wrapped in Prefect's "json" placeholder the rendered
    # JSON is parsed back, so `batches` arrives as an integer and strings come back unquoted.
    return {"__prefect_kind": "json",
            "value": {"__prefect_kind": "jinja", "template": f"{{{{ event.payload.{name} | tojson }}}}"}}


def definition(release_deployment: uuid.UUID) -> Any:
    """The automation: every ``cairn.release.requested`` event runs the release deployment once."""
    from prefect.events.actions import RunDeployment
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=AUTOMATION,
        description="cairn webhook: a verified delivery's cairn.release.requested event starts one release order.",
        enabled=True,
        trigger=EventTrigger(expect={EVENT}, match={"prefect.resource.id": f"{RESOURCE_PREFIX}*"},
                             posture=Posture.Reactive, threshold=1, within=0),
        actions=[RunDeployment(source="selected", deployment_id=release_deployment,
                               parameters={name: _from_payload(name) for name in PARAMETERS})],
    )


def ensure_release_automation(release_deployment: uuid.UUID | str) -> uuid.UUID:
    """Create or update the automation (idempotent: ``cairn up`` runs it every time)."""
    from prefect.client.orchestration import get_client

    wanted = definition(uuid.UUID(str(release_deployment)))
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(AUTOMATION)
        if not existing:
            return client.create_automation(wanted)
        keep, *extra = existing
        for duplicate in extra:  # two `cairn up` racing each created one: one is enough
            client.delete_automation(duplicate.id)
        client.update_automation(keep.id, wanted)
        return keep.id


def automation_id() -> uuid.UUID:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(AUTOMATION)
    if not found:
        raise NotFound(f"the {AUTOMATION!r} automation does not exist, so no event can start a release",
                       hint="start the platform with `cairn up` (it creates the automation with the deployments)")
    return found[0].id


def release_event(delivery: str, app: str, environment: str, parameters: dict[str, Any], attempt: int = 1) -> Any:
    """The event for ``delivery``: the same id and payload however often it is built."""
    from prefect.events import Event

    return Event(id=event_id(delivery, attempt), event=EVENT,
                 resource={"prefect.resource.id": f"{RESOURCE_PREFIX}{app}.{environment}",
                           "prefect.resource.name": f"{app} {environment}"},
                 payload={**parameters, "app": app, "environment": environment, "requested_by": actor(delivery),
                          "delivery": delivery})


def post_event(event: Any) -> None:
    """Synchronously, unlike ``emit_event``'s background worker: the server has it on return."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.request("POST", "/events", json=[event.model_dump(mode="json")])


def request_release(delivery: str, app: str, environment: str, parameters: dict[str, Any], attempt: int = 1) -> uuid.UUID:
    event = release_event(delivery, app, environment, parameters, attempt)
    post_event(event)
    return event.id


def pending_runs(automation: uuid.UUID) -> list[FlowRun]:
    """Active runs the automation created: those not yet started carry no tags, only parameters."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterCreatedBy, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.sorting import FlowRunSort

    flt = FlowRunFilter(created_by=FlowRunFilterCreatedBy(id_=[automation]),
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=records.ACTIVE_STATES)))
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flt, sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)


def run_of(delivery: str, automation: uuid.UUID) -> FlowRun | None:
    """The order ``delivery`` started, if any: by its tag, or by its parameters before it runs."""
    tagged = records.find_runs(tags.by(actor(delivery)), limit=1)
    if tagged:
        return tagged[0]
    return next((r for r in pending_runs(automation) if (r.parameters or {}).get("requested_by") == actor(delivery)), None)
