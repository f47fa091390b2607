from __future__ import annotations

import pytest

from cairn.status import Action, Status, allowed_actions, refusal, rollback_status, status_from_state


@pytest.mark.parametrize(
    ("state", "name", "status"),
    [
        ("SCHEDULED", "Scheduled", Status.PENDING),
        ("SCHEDULED", "AwaitingRetry", Status.PENDING),
        ("PENDING", None, Status.PENDING),
        ("RUNNING", None, Status.DEPLOYING),
        ("PAUSED", "Paused", Status.PAUSED),
        ("PAUSED", "Suspended", Status.PAUSED),
        ("COMPLETED", None, Status.COMPLETED),
        ("FAILED", None, Status.FAILED),
        ("CRASHED", None, Status.FAILED),
        ("CANCELLED", None, Status.CLOSED),
        ("CANCELLING", None, Status.CLOSED),
    ],
)
def test_status_from_state(state: str, name: str | None, status: Status) -> None:
    assert status_from_state(state, name) is status


@pytest.mark.parametrize(
    ("status", "action", "allowed"),
    [
        (Status.PAUSED, Action.RESUME, True),
        (Status.DEPLOYING, Action.RESUME, False),
        (Status.COMPLETED, Action.RESUME, False),
        (Status.COMPLETED, Action.CLOSE, False),
        (Status.CLOSED, Action.CLOSE, False),
        (Status.FAILED, Action.CLOSE, True),
        (Status.PAUSED, Action.CLOSE, True),
        (Status.DEPLOYING, Action.SWITCH_PAUSE_MODE, True),
        (Status.COMPLETED, Action.SWITCH_PAUSE_MODE, False),
        (Status.COMPLETED, Action.RETRY, True),
        (Status.DEPLOYING, Action.ROLLBACK, True),
        (Status.COMPLETED, Action.ROLLBACK, True),
        (Status.ROLLING_BACK, Action.ROLLBACK, False),
    ],
)
def test_actions(status: Status, action: Action, allowed: bool) -> None:
    assert (action in allowed_actions(status)) is allowed
    message = refusal(status, action)
    assert (message is None) is allowed
    if message:
        assert str(status) in message and str(action) in message


def test_rollback_status() -> None:
    assert rollback_status("RUNNING") is Status.ROLLING_BACK
    assert rollback_status("COMPLETED") is Status.ROLLED_BACK
    assert rollback_status("FAILED") is None
