"""The error tree crosses process boundaries (a flow run's exception is its persisted result)."""

from __future__ import annotations

import pickle

import pytest

from cairn.errors import BatchFailed, CairnError, ConfigError, NotFound, PermanentError

ERRORS = {
    "a plain error keeps its message and hint": CairnError("it broke", hint="fix it"),
    "a config error keeps every problem": ConfigError([("apps[a].cpu", -1, "a positive number"), ("x", "y", "z")]),
    "not found keeps its exit code": NotFound("no app 'a'", hint="cairn app list"),
    "a failed batch keeps its instances and events": BatchFailed(2, {"a-test-1": "OOMKilled"}, ["Warning BackOff"]),
}


@pytest.mark.parametrize("error", ERRORS.values(), ids=ERRORS.keys())
def test_an_error_survives_pickling_whole(error: CairnError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.message, back.hint, back.exit_code, str(back)) == (error.message, error.hint, error.exit_code, str(error))
    assert back.to_dict() == error.to_dict()
    if isinstance(error, BatchFailed):
        assert isinstance(back, PermanentError) and (back.batch, back.failed, back.events) == (error.batch, error.failed, error.events)
