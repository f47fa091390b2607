"""Release order statuses, the actions each allows, and how they map to Prefect states.

An order's status is derived, never stored: from its flow run's state (and, for a rollback,
the rollback run's). Prefect state names are passed in as plain strings so this module stays
free of Prefect.

| status        | Prefect state of the order's flow run                                  |
|---------------|------------------------------------------------------------------------|
| pending       | SCHEDULED, PENDING (and SCHEDULED "AwaitingRetry" before a retry runs)  |
| deploying     | RUNNING                                                                |
| paused        | PAUSED (hot pause, process alive) or PAUSED "Suspended" (no process)   |
| completed     | COMPLETED                                                              |
| failed        | FAILED, CRASHED                                                        |
| closed        | CANCELLED, CANCELLING                                                  |
| rolling_back  | the rollback flow run that targets the order: SCHEDULED/PENDING/RUNNING |
| rolled_back   | that rollback run: COMPLETED                                           |
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    DEPLOYING = "deploying"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CLOSED = "closed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class Action(StrEnum):
    RESUME = "resume"
    SWITCH_PAUSE_MODE = "pause-mode"
    RETRY = "retry"
    CLOSE = "close"
    ROLLBACK = "rollback"


ACTIVE = frozenset({Status.PENDING, Status.DEPLOYING, Status.PAUSED, Status.ROLLING_BACK})
"""Statuses that hold the environment: a second order for it is refused or queued."""

_ALLOWED: dict[Status, frozenset[Action]] = {
    Status.PENDING: frozenset({Action.SWITCH_PAUSE_MODE, Action.RETRY, Action.CLOSE, Action.ROLLBACK}),
    Status.DEPLOYING: frozenset({Action.SWITCH_PAUSE_MODE, Action.RETRY, Action.CLOSE, Action.ROLLBACK}),
    Status.PAUSED: frozenset({Action.RESUME, Action.SWITCH_PAUSE_MODE, Action.RETRY, Action.CLOSE, Action.ROLLBACK}),
    Status.FAILED: frozenset({Action.RETRY, Action.CLOSE, Action.ROLLBACK}),
    Status.COMPLETED: frozenset({Action.RETRY, Action.ROLLBACK}),
    Status.CLOSED: frozenset({Action.RETRY, Action.ROLLBACK}),
    Status.ROLLING_BACK: frozenset(),
    Status.ROLLED_BACK: frozenset(),
}

_WHY_NOT: dict[Action, str] = {
    Action.RESUME: "only a paused order can be resumed",
    Action.SWITCH_PAUSE_MODE: "the pause mode can be switched only while the order is pending, deploying or paused",
    Action.RETRY: "a rollback is in progress or done for this order",
    Action.CLOSE: "only an order that is not completed, closed or rolled back can be closed",
    Action.ROLLBACK: "a rollback is already in progress or done for this order",
}


def allowed_actions(status: Status) -> frozenset[Action]:
    """
    >>> sorted(str(a) for a in allowed_actions(Status.PAUSED))
    ['close', 'pause-mode', 'resume', 'retry', 'rollback']
    """
    return _ALLOWED[status]


def refusal(status: Status, action: Action) -> str | None:
    """Why ``action`` is refused in ``status``, or None when it is allowed."""
    if action in _ALLOWED[status]:
        return None
    return f"cannot {action} an order that is {status}: {_WHY_NOT[action]}"


def status_from_state(state_type: str, state_name: str | None = None) -> Status:
    """The status of a release order whose flow run is in ``state_type`` (Prefect's StateType value).

    >>> status_from_state("PAUSED", "Suspended")
    <Status.PAUSED: 'paused'>
    >>> status_from_state("CANCELLED")
    <Status.CLOSED: 'closed'>
    """
    return _BY_STATE[state_type.upper()]


def rollback_status(state_type: str) -> Status | None:
    """The order's status while a rollback run targets it, or None when that run failed/was cancelled
    (then the order keeps the status of its own run)."""
    kind = state_type.upper()
    if kind == "COMPLETED":
        return Status.ROLLED_BACK
    if kind in {"SCHEDULED", "PENDING", "RUNNING", "PAUSED"}:
        return Status.ROLLING_BACK
    return None


_BY_STATE = {
    "SCHEDULED": Status.PENDING,
    "PENDING": Status.PENDING,
    "RUNNING": Status.DEPLOYING,
    "PAUSED": Status.PAUSED,
    "COMPLETED": Status.COMPLETED,
    "FAILED": Status.FAILED,
    "CRASHED": Status.FAILED,
    "CANCELLING": Status.CLOSED,
    "CANCELLED": Status.CLOSED,
}
