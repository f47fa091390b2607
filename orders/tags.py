"""The tag vocabulary of an order's flow run: one place says what each tag means.

An order *is* a flow run, and its tags are how every door (the CLI, the webhook, schedules, the
UI's flows) finds it and tells what it is, so they are written and read only through here:

============================  ==========================================================
``cairn``                     every run cairn starts
``kind:<kind>``               ``release``, ``rollback``, ``retry`` or ``build``
``app:<app>``, ``env:<env>``  the environment it acts on
``rev:<digest prefix>``       the revision a release ships (32 hex digits of its digest)
``cluster:<name>``            the revision's cluster, so a re-run reads both in one request
``by:<who>``                  who asked: a user, ``webhook:<delivery>`` or a schedule
``request:<id>``              one create's own mark: tells the winner of a create race
``queued``                    waits behind the environment's active order instead of refusing
``closed-by:<who>``           who closed it
``order:<id>``                a retry's order
``rollback-of:<id>``          a rollback's order
============================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Kind = Literal["release", "rollback", "retry", "build"]
HOLDS_ENVIRONMENT: tuple[Kind, ...] = ("release", "rollback")  # the kinds that change instances

CAIRN = "cairn"
KIND = "kind:"
APP = "app:"
ENV = "env:"
REV = "rev:"
CLUSTER = "cluster:"
BY = "by:"
REQUEST = "request:"
QUEUED = "queued"
CLOSED_BY = "closed-by:"
ORDER = "order:"
ROLLBACK_OF = "rollback-of:"
REV_DIGITS = 32  # of the revision's digest: unique among an environment's revisions, short in the UI


def for_kind(kind: Kind, app: str, env: str | None = None) -> list[str]:
    """The tags that find every run of ``kind`` on ``app``/``env`` (a build has no environment)."""
    return [CAIRN, f"{KIND}{kind}", f"{APP}{app}", *([f"{ENV}{env}"] if env else [])]


def for_revision(digest: str, cluster: str) -> list[str]:
    return [f"{REV}{digest[:REV_DIGITS]}", f"{CLUSTER}{cluster}"]


def by(who: str) -> str:
    return f"{BY}{who}"


def value(tags: Iterable[str], prefix: str) -> str | None:
    """The value of the first tag with ``prefix``, if the run has one."""
    return next((t[len(prefix):] for t in tags if t.startswith(prefix)), None)


def holds_environment(tags: Iterable[str]) -> bool:
    """A release or a rollback: the runs of which one at a time may act on an environment."""
    present = set(tags)
    return any(f"{KIND}{kind}" in present for kind in HOLDS_ENVIRONMENT)
