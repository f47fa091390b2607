"""A release request is checked the same way at every door: the field, the value and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from cairn.errors import ConfigError
from cairn.orders.requests import ReleaseRequest
from cairn.plan import PauseMode

GOOD: dict[str, Any] = {"app": "shop-api", "environment": "test", "version": "v2", "batches": 2, "pause_mode": "none"}

REFUSED = {
    "an unknown environment is refused": ({"environment": "staging"}, "environment"),
    "an app name with a space is refused": ({"app": "shop api"}, "app"),
    "an app name with capitals is refused": ({"app": "Shop"}, "app"),
    "an empty version is refused": ({"version": ""}, "version"),
    "a version with a slash is refused": ({"version": "v2/../x"}, "version"),
    "zero batches are refused": ({"batches": 0}, "batches"),
    "more than a thousand batches are refused": ({"batches": 1001}, "batches"),
    "an unknown pause mode is refused": ({"pause_mode": "sometimes"}, "pause_mode"),
    "an unknown key is refused": ({"colour": "blue"}, "colour"),
}


@pytest.mark.parametrize(("change", "field"), REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_request_names_its_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ReleaseRequest.parse({**GOOD, **change})
    assert [f for f, _, _ in err.value.problems] == [field]


def test_every_bad_field_is_named_at_once_under_where_it_came_from() -> None:
    with pytest.raises(ConfigError) as err:
        ReleaseRequest.parse({**GOOD, "batches": 0, "version": ""}, where="schedules[3]")
    assert sorted(f for f, _, _ in err.value.problems) == ["schedules[3].batches", "schedules[3].version"]


def test_a_good_request_keeps_its_values_and_gives_the_deployment_parameters() -> None:
    request = ReleaseRequest.parse(GOOD)
    assert request.pause_mode is PauseMode.NONE
    assert request.parameters() == GOOD


def test_defaults_are_two_batches_pausing_after_the_first() -> None:
    request = ReleaseRequest.parse({"app": "a", "environment": "production", "version": "1.0"})
    assert (request.batches, request.pause_mode) == (2, PauseMode.FIRST_BATCH)
