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

Answers: 202 (order started: its id and UI link), 401 (missing, malformed or wrong signature, or
a timestamp more than 5 minutes off), 409 (this delivery already started an order, or the
environment has an active one), 422 (the payload is not a valid release), 503 (no secret set).
Nothing is started unless the answer is 202.

At most one order per delivery id, across processes and restarts: the flow run is created with
the idempotency key ``webhook:<delivery>`` (Prefect creates one run per key, atomically) and
carries the tag ``delivery:<id>``. Duplicates arriving together are serialised per delivery in
this process, so they cost one lookup each rather than one more create on the database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SECRET_NAME = "webhook-secret"
MAX_SKEW_S = 300
MAX_BODY = 64 * 1024
DELIVERY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
H_DELIVERY, H_TIMESTAMP, H_SIGNATURE = "x-cairn-delivery", "x-cairn-timestamp", "x-cairn-signature"


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: str = Field(min_length=1, max_length=63)
    environment: Literal["production", "test"]
    version: str = Field(min_length=1, max_length=128)
    batches: int = Field(2, ge=1, le=1000)
    pause_mode: Literal["first_batch", "every_batch", "none"] = "first_batch"


class Refusal(Exception):
    """An answer other than 202: the HTTP status, why, and what helps (never a secret)."""

    def __init__(self, status: int, reason: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.detail = status, reason, detail


def sign(secret: str, timestamp: int | str, delivery: str, body: bytes) -> str:
    """The signature header value a sender computes (kept here so senders and tests share it)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.{delivery}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> str:
    """The delivery id of an authentic, fresh request; else a 401 ``Refusal``."""
    delivery, stamp, signature = headers.get(H_DELIVERY, ""), headers.get(H_TIMESTAMP, ""), headers.get(H_SIGNATURE, "")
    if not signature:
        raise Refusal(401, f"unsigned request: send {H_SIGNATURE}: sha256=<hex HMAC-SHA256>")
    if not DELIVERY.match(delivery):
        raise Refusal(401, f"missing or malformed {H_DELIVERY}: 1-128 of [A-Za-z0-9._:-]")
    if not stamp.isdigit():
        raise Refusal(401, f"missing or malformed {H_TIMESTAMP}: unix seconds")
    # Constant-time comparison, and before the freshness check so timing says nothing either way.
    if not hmac.compare_digest(signature.encode(), sign(secret, stamp, delivery, body).encode()):
        raise Refusal(401, "bad signature")
    skew = abs((time.time() if now is None else now) - int(stamp))
    if skew > MAX_SKEW_S:
        raise Refusal(401, f"stale request: timestamp is {skew:.0f}s off (at most {MAX_SKEW_S}s)")
    return delivery


def parse(body: bytes) -> ReleaseRequest:
    try:
        return ReleaseRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = [{"field": ".".join(map(str, e["loc"])) or "body", "problem": e["msg"]} for e in exc.errors()]
        raise Refusal(422, "invalid release request", {"problems": problems}) from None


# --- starting the order ---------------------------------------------------------------------------

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(delivery: str) -> threading.Lock:
    with _locks_guard:
        if len(_locks) > 10_000:  # forget idle locks; the durable guarantee is Prefect's key
            for key in [k for k, v in _locks.items() if not v.locked()]:
                del _locks[key]
        return _locks.setdefault(delivery, threading.Lock())


def _existing(delivery: str) -> Any:
    from cairn.flows import orders

    runs = orders.find_runs("cairn", f"delivery:{delivery}", limit=1)
    return runs[0] if runs else None


def _replayed(run: Any, delivery: str) -> Refusal:
    from cairn.deployments.actions import ui_url

    return Refusal(409, f"delivery {delivery} was already received: it started order {run.id}",
                   {"order": str(run.id), "url": ui_url(run.id)})


def start_release(delivery: str, req: ReleaseRequest) -> dict[str, Any]:
    """Create the order for ``delivery`` once; a repeat of the delivery is a 409 naming that order."""
    with _lock_for(delivery):
        run = _existing(delivery)
        if run is not None:
            raise _replayed(run, delivery)
        return _create(delivery, req)


def _create(delivery: str, req: ReleaseRequest) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    from cairn.deployments import actions
    from cairn.errors import CairnError, Conflict, NotFound
    from cairn.flows import orders
    from cairn.flows.release import snapshot
    from cairn.plan import plan_release

    try:
        revision = snapshot(req.app, req.environment, req.version)  # validates app, environment and version
        plan_release(revision.spec.instances, req.batches)  # and the batch count against the instances
        active = orders.active_runs(req.app, req.environment)
        if active:
            raise Conflict(f"{req.app}/{req.environment} already has an active order {active[0].id} ({active[0].name})")
        deployment = actions._deployment_id("release")
    except Conflict as exc:
        raise Refusal(409, exc.message) from None
    except NotFound as exc:
        raise Refusal(422, exc.message, {"hint": exc.hint}) from None
    except (CairnError, ValueError) as exc:
        raise Refusal(422, getattr(exc, "message", str(exc))) from None
    request = f"request:{uuid.uuid4().hex}"
    tags = [*orders.tags_for("release", req.app, req.environment), f"{orders.REV_TAG}{revision.digest[:32]}",
            f"delivery:{delivery}", "by:webhook", request]
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(
            deployment, parameters=req.model_dump(), tags=tags, idempotency_key=f"webhook:{delivery}",
            name=f"{req.app}-{req.environment}-{req.version}")
    if request not in run.tags:  # another process won the key for this delivery
        raise _replayed(run, delivery)
    return {"order": str(run.id), "name": run.name, "url": actions.ui_url(run.id), "delivery": delivery}


# --- the HTTP app ----------------------------------------------------------------------------------

def _secret() -> str:
    from cairn.blocks.store import get_secret
    from cairn.errors import NotFound

    try:
        return get_secret(SECRET_NAME)
    except NotFound:
        raise Refusal(503, f"no webhook secret: set one with `cairn secret set {SECRET_NAME}`") from None


def handle(headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
    """One request, start to answer; blocking (Prefect's sync client), run in a worker thread."""
    try:
        if len(body) > MAX_BODY:
            raise Refusal(413, f"body over {MAX_BODY} bytes")
        delivery = verify(_secret(), headers, body)
        return 202, start_release(delivery, parse(body))
    except Refusal as refusal:
        return refusal.status, {"error": refusal.reason, **(refusal.detail or {})}


def create_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def releases(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, data = await run_in_threadpool(handle, headers, body)
        return JSONResponse(data, status_code=status)

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/releases", releases, methods=["POST"]), Route("/health", health, methods=["GET"])])


def serve(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(), host=host, port=port, log_level="info", access_log=True)
