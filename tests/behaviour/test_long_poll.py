"""The long poll (``observe_slots(..., unless=, wait_s=)``): the health wait's way to learn of a
change as it happens (cairn/runtime.py, the Runtime protocol)."""

from __future__ import annotations

import threading
import time

import pytest

from cairn.runtime import Instance
from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow


def long_poll(runtime: Harness, env, slots: list[int], unless: list[Instance] | None, wait_s: float) -> tuple[list[Instance], float]:  # type: ignore[no-untyped-def]
    began = time.monotonic()
    found = runtime.runtime.observe_slots(env, slots, unless=unless, wait_s=wait_s)
    return found, time.monotonic() - began


def test_without_a_change_it_answers_after_wait_s_with_the_same_instances(runtime: Harness) -> None:
    env = runtime.env("poll")
    runtime.ensure(env, [0, 1], runtime.revision(env, "v1"))
    ready = runtime.wait_ready(env, 2)
    found, took = long_poll(runtime, env, [1], [ready[1]], 1.5)
    assert found == [ready[1]]
    assert took >= 1.5, f"answered after {took:.2f}s, before wait_s"  # how far past it: bench/timings.py
    plain, _ = long_poll(runtime, env, [0, 1], None, 30)
    assert plain == ready, "without `unless` it answers at once"


def test_it_answers_as_soon_as_the_slots_change_and_not_for_other_slots(runtime: Harness) -> None:
    env = runtime.env("poll")
    v1 = runtime.revision(env, "v1")
    runtime.ensure(env, [0, 1], v1)
    ready = runtime.wait_ready(env, 2)

    # Slot 0 is replaced while slot 1 is watched: slot 1 did not change, so the answer waits.
    replace = threading.Thread(target=runtime.ensure, args=(env, [0], runtime.revision(env, "v2")))
    replace.start()
    found, took = long_poll(runtime, env, [1], [ready[1]], 2.0)
    replace.join()
    assert found == [ready[1]] and took >= 2.0

    # Slot 0 is watched from before its replacement begins: the answer comes with the change
    # (the new instance on v2, starting), long before wait_s.
    now = runtime.runtime.observe(env)[0]
    v3 = runtime.revision(env, "v3")
    replace = threading.Thread(target=runtime.ensure, args=(env, [0], v3))
    replace.start()
    found, took = long_poll(runtime, env, [0], [now], 300)
    replace.join()
    # An answer before wait_s ran out is an answer to the change (how soon: bench/timings.py).
    assert found != [now] and took < 300, (found, took)
    # Then readiness: polls chained on the last answer follow the instance to ready.
    deadline = time.monotonic() + 30
    while not (found and found[0].revision == v3.digest and found[0].ready) and time.monotonic() < deadline:
        found, _ = long_poll(runtime, env, [0], found, max(0.0, deadline - time.monotonic()))
    assert found[0].revision == v3.digest and found[0].ready, found
