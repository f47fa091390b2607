"""One active order per environment: the rule, in one place, for every door.

Two orders acting on one environment at once would fight over its slots, so at most one release
or rollback holds an environment at a time. The rule is kept at three moments:

- **creating** an order (the CLI, the webhook): refused with ``Conflict`` while another holds the
  environment (:func:`refuse_if_held`), and the create itself carries an idempotency key derived
  from the environment and its last finished order (:func:`create_key`), so creates racing past
  that check compute the same key and Prefect makes exactly one run;
- **running** it (every run, also those started from the UI's form or a schedule, which pass no
  door of cairn's): the flow waits for its turn or refuses (:func:`take_turn`) before it touches
  an instance;
- **queued** orders (``--queue``) wait behind the older ones instead of being refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from cairn.errors import Conflict
from cairn.orders import records, tags
from cairn.orders.history import OrderRun

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

QUEUE_POLL_S = 2.0


def holders(app: str, env: str, *, exclude: UUID | None = None) -> list[OrderRun]:
    """The runs that hold ``app``/``env`` now: releases and rollbacks that have not finished."""
    return records.active_runs(app, env, exclude=exclude)


def refuse_if_held(app: str, env: str, *, waiting: Sequence[FlowRun | OrderRun] = ()) -> None:
    """``Conflict`` if an order holds the environment; ``waiting`` adds runs that will hold it
    once they start (the webhook's automation creates runs that carry no tags yet)."""
    held = [*holders(app, env), *waiting]
    if held:
        raise _conflict(app, env, held[0], "resume, close or wait for it; or create with --queue")


def create_key(app: str, env: str, *, queued_request: str | None = None) -> str:
    """The idempotency key of a new order's create: the same for every create that races for the
    environment after the same finished order. A queued order does not race, so it gets its own."""
    if queued_request:
        return f"queued:{queued_request}"
    last = records.last_finished(app, env)
    return f"release:{app}:{env}:after:{last.id if last else 'none'}"


def take_turn(me: FlowRun, app: str, env: str, *, on_wait: Callable[[OrderRun], None] | None = None) -> None:
    """Return once no older order holds the environment. A run that is not queued is refused at
    once (``Conflict``); a queued one waits, calling ``on_wait`` once with the order ahead."""
    told = False
    while True:
        older = [r for r in holders(app, env, exclude=me.id) if r.created and me.created and r.created < me.created]
        if not older:
            return
        if tags.QUEUED not in me.tags:
            raise _conflict(app, env, older[0], "wait for it, close it, or create with --queue")
        if on_wait and not told:
            on_wait(older[0])
            told = True
        time.sleep(QUEUE_POLL_S)  # an order ahead may stay paused for days: poll, do not hold a watch


def _conflict(app: str, env: str, holder: FlowRun | OrderRun, hint: str) -> Conflict:
    return Conflict(f"{app}/{env} already has an active order {holder.id} ({holder.name})", hint=hint)
