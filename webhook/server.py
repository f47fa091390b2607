"""A signed webhook for CI systems: a valid request starts one release order.

Webhooks are a Prefect Cloud feature; the open-source server has none, so cairn serves its own
(``cairn webhook serve``). A request is::

    POST /releases
    Content-Type: application/json
    X-Cairn-Delivery: <id>            unique per delivery, 1-128 of [A-Za-z0-9._:-]; a CI's retry reuses it
    X-Cairn-Timestamp: <unix seconds> when the request was signed
    X-Cairn-Signature: sha256=<hex>   HMAC-SHA256 with the shared secret over
                                      "<timestamp>.<delivery>." + the raw body

    {"app": "shop-api", "environment": "test", "version": "v2", "batches": 2, "pause_mode": "none"}

The signature covers the timestamp and the delivery id too: signed over the body alone, a
captured request could be replayed with a fresh timestamp or a new delivery id. The secret is
the Prefect Secret block ``webhook-secret`` (``cairn secret set webhook-secret``), read per
request so a rotation needs no restart.

Answers: 202 (the release is requested: the event's id, and the order's id and UI link once the
automation created it), 400 (a malformed Content-Length), 401 (missing, malformed or wrong
signature, or a timestamp more than 5 minutes off), 409 (this delivery was already received, or
the environment has an active order), 413 (a body over 64 KiB: refused on its Content-Length
before any of it is read, or as soon as a chunked one passes the limit), 422 (the payload is not
a valid release), 503 (no secret set, no automation: `cairn up`, or
Prefect reported it could not start the release: send the delivery again). Nothing is requested
unless the answer is 202 (a 503 of the last kind requested a release that did not start).

A verified request does not create the order itself: it posts a Prefect event, and the
``cairn-webhook-release`` automation runs the ``release`` deployment (see ``automations``), so
the order is the same flow run the UI, a schedule or the CLI would start. At most one order per
delivery id, across processes and restarts: the event id is derived from the delivery (Prefect
fires once per event id) and the webhook first looks for the order the delivery already started
(its ``by:webhook:<delivery>`` tag, or its parameters before it runs), then for the deliveries it
posted an event for (``deliveries``: kept on disk, so a replay just after a restart is a 409 too).
Duplicates arriving together are serialised per delivery in this process, so they cost one
lookup each.

What costs nothing is checked first: the size and the signature headers' form are checked
before the body is read and before any lookup (the secret, a run), so an unsigned or oversized
request reaches neither the Prefect API nor the disk.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from functools import cache
from typing import TYPE_CHECKING, Any

from cairn.errors import ConfigError
from cairn.orders.requests import ReleaseRequest
from cairn.webhook.deliveries import Deliveries, default_path

if TYPE_CHECKING:
    from starlette.applications import Starlette

SECRET_NAME = "webhook-secret"
MAX_SKEW_S = 300
MAX_BODY = 64 * 1024
DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
H_DELIVERY, H_TIMESTAMP, H_SIGNATURE = "x-cairn-delivery", "x-cairn-timestamp", "x-cairn-signature"


class Refusal(Exception):
    """An answer other than 202: the HTTP status, why, and what helps (never a secret)."""

    def __init__(self, status: int, reason: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def sign(secret: str, timestamp: int | str, delivery: str, body: bytes) -> str:
    """The signature header value a sender computes (kept here so senders and tests share it)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{delivery}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def signature_headers(headers: dict[str, str]) -> tuple[str, str, str]:
    """``(delivery, timestamp, signature)`` when each is there and well formed; else a 401 ``Refusal``.
    Needs nothing but the headers: answered before the body is read or anything looked up."""
    delivery, stamp, signature = headers.get(H_DELIVERY, ""), headers.get(H_TIMESTAMP, ""), headers.get(H_SIGNATURE, "")
    if not signature:
        raise Refusal(401, f"unsigned request: send {H_SIGNATURE}: sha256=<hex HMAC-SHA256>")
    if not DELIVERY.fullmatch(delivery):
        raise Refusal(401, f"missing or malformed {H_DELIVERY}: 1-128 of [A-Za-z0-9._:-]")
    if not (stamp.isascii() and stamp.isdigit()):
        raise Refusal(401, f"missing or malformed {H_TIMESTAMP}: unix seconds")
    return delivery, stamp, signature


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> str:
    """The delivery id of an authentic, fresh request; else a 401 ``Refusal``."""
    delivery, stamp, signature = signature_headers(headers)
    # Constant-time comparison, and before the freshness check so timing says nothing either way.
    if not hmac.compare_digest(signature.encode(), sign(secret, stamp, delivery, body).encode()):
        raise Refusal(401, "bad signature")
    skew = abs((time.time() if now is None else now) - int(stamp))
    if skew > MAX_SKEW_S:
        raise Refusal(401, f"stale request: timestamp is {skew:.0f}s off (at most {MAX_SKEW_S}s)")
    return delivery


def parse(body: bytes) -> ReleaseRequest:
    """The body as a release request (``cairn.orders.requests``, the one every door takes), or a 422."""
    try:
        data = json.loads(body)
    except ValueError:
        raise Refusal(422, "invalid release request", {"problems": [{"field": "body", "problem": "not JSON"}]}) from None
    if not isinstance(data, dict):
        raise Refusal(422, "invalid release request", {"problems": [{"field": "body", "problem": "a JSON object"}]})
    try:
        return ReleaseRequest.parse(data)
    except ConfigError as exc:
        raise Refusal(422, "invalid release request", _problems(exc)) from None


def _problems(exc: ConfigError) -> dict[str, Any]:
    return {"problems": [{"field": field, "problem": fix} for field, _, fix in exc.problems]}


# --- starting the order ---------------------------------------------------------------------------

RUN_WAIT_S = 20.0  # the automation creates the run about a second after the event; more under load
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@cache
def _posted() -> Deliveries:
    """Deliveries an event was posted for, whose run may not exist yet: a repeat meanwhile is a
    replay too. Kept while a captured request's signature can stay fresh (its timestamp may be
    ``MAX_SKEW_S`` ahead of this clock, and is accepted ``MAX_SKEW_S`` after)."""
    return Deliveries(default_path(), keep_s=2 * MAX_SKEW_S)


def _lock_for(delivery: str) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 10_000:  # forget idle locks; the durable guarantee is the event id and the run
            for key in [k for k, v in _locks.items() if not v.locked()]:
                del _locks[key]
        return _locks.setdefault(delivery, threading.Lock())


def _replayed(delivery: str, run: Any = None, event: uuid.UUID | None = None) -> Refusal:
    from cairn.orders.actions import ui_url

    if run is None:
        return Refusal(409, f"delivery {delivery} was already received: its release is being started",
                       {"event": str(event)})
    return Refusal(409, f"delivery {delivery} was already received: it started order {run.id}",
                   {"order": str(run.id), "url": ui_url(run.id)})


def start_release(delivery: str, req: ReleaseRequest) -> dict[str, Any]:
    """Post the release event for ``delivery`` once; a repeat of the delivery is a 409 naming its order."""
    from cairn.errors import NotFound
    from cairn.orders import events

    with _lock_for(delivery):
        try:
            automation = events.automation_id()
        except NotFound as exc:
            raise Refusal(503, exc.message, {"hint": exc.hint}) from None
        run = events.run_of(delivery, automation)
        if run is not None:
            raise _replayed(delivery, run)
        posted = _posted().get(delivery)
        if posted is not None and events.action_failure(posted) is None:
            raise _replayed(delivery, event=posted)
        _check(req, automation)
        event = events.request_release(delivery, req.app, req.environment, req.parameters(),
                                            events.next_attempt(delivery))
        _posted().add(delivery, event)
        return _answer(delivery, event, automation)


def _check(req: ReleaseRequest, automation: uuid.UUID) -> None:
    """Refuse now what the order would fail on (the pre-flight check every door runs, which stores
    nothing): unknown app, environment or version, too many batches (422), an environment
    another order holds (409), or an image registry that does not answer (503: retry later)."""
    from cairn.errors import CairnError, Conflict, NotFound, TemporaryError
    from cairn.orders import events, rules
    from cairn.orders.requests import check

    try:
        check(req)
        # Runs the automation created that have not started yet carry no tags: match their parameters.
        waiting = [r for r in events.pending_runs(automation)
                   if (r.parameters or {}).get("app") == req.app and (r.parameters or {}).get("environment") == req.environment]
        rules.refuse_if_held(req.app, req.environment, waiting=waiting)
    except Conflict as exc:
        raise Refusal(409, exc.message) from None
    except NotFound as exc:
        raise Refusal(422, exc.message, {"hint": exc.hint}) from None
    except ConfigError as exc:
        raise Refusal(422, "invalid release request", _problems(exc)) from None
    except TemporaryError as exc:
        raise Refusal(503, exc.message, {"hint": exc.hint}) from None
    except CairnError as exc:
        raise Refusal(422, exc.message) from None


def _answer(delivery: str, event: uuid.UUID, automation: uuid.UUID) -> dict[str, Any]:
    """The 202: the event, and the order once the automation created it (a CI links to it)."""
    from cairn.orders import events
    from cairn.orders.actions import ui_url

    answer: dict[str, Any] = {"delivery": delivery, "event": str(event), "order": None, "url": None}
    deadline = time.monotonic() + RUN_WAIT_S
    checked_failure = time.monotonic()
    while time.monotonic() < deadline:
        run = events.run_of(delivery, automation)
        if run is not None:
            return {**answer, "order": str(run.id), "url": ui_url(run.id)}
        if time.monotonic() - checked_failure > 2:  # events reach the store in batches, seconds apart
            checked_failure = time.monotonic()
            failure = events.action_failure(event)
            if failure is not None:  # nothing started: a resend of this delivery posts the next attempt
                _posted().forget(delivery)
                raise Refusal(503, f"Prefect could not start the release: {failure}", {"hint": "send the delivery again"})
        time.sleep(0.2)
    return answer  # accepted all the same: the automation starts it, `cairn release list` shows it


# --- the HTTP app ----------------------------------------------------------------------------------

def _secret() -> str:
    from cairn.blocks.store import get_secret
    from cairn.errors import NotFound

    try:
        return get_secret(SECRET_NAME)
    except NotFound:
        raise Refusal(503, f"no webhook secret: set one with `cairn secret set {SECRET_NAME}`") from None


def declared_size(headers: dict[str, str]) -> None:
    """Refuse a body by its Content-Length (400 malformed, 413 over ``MAX_BODY``) before reading it."""
    length = headers.get("content-length")
    if length is None:
        return  # chunked: the read stops at the limit (create_app)
    if not (length.isascii() and length.isdigit()):
        raise Refusal(400, f"malformed Content-Length: {length[:40]!r}: a number of bytes")
    if int(length) > MAX_BODY:
        raise Refusal(413, f"body of {length} bytes: at most {MAX_BODY}")


def handle(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    """One request, start to answer; blocking (Prefect's sync client), run in a worker thread."""
    try:
        delivery = verify(_secret(), headers, body)
        return 202, start_release(delivery, parse(body))
    except Refusal as refusal:
        return refusal.status, {"error": refusal.reason, **(refusal.detail or {})}


def create_app() -> Starlette:
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def releases(request: Request) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            declared_size(headers)
            signature_headers(headers)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY:
                    raise Refusal(413, f"body over {MAX_BODY} bytes")
        except Refusal as refusal:
            # The rest of the body is never read: the connection closes after the answer.
            return JSONResponse({"error": refusal.reason}, status_code=refusal.status, headers={"Connection": "close"})
        status, data = await run_in_threadpool(handle, headers, bytes(body))
        return JSONResponse(data, status_code=status)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/releases", releases, methods=["POST"]), Route("/health", health, methods=["GET"])])


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="info", access_log=True)
