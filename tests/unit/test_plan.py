"""The release plan: batch arithmetic and next-step decisions, table-driven plus properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.errors import ConfigError
from cairn.plan import PauseMode, SlotState, batch_sizes, done_instances, next_step, pauses_after, plan_release


@pytest.mark.parametrize(
    ("instances", "batches", "sizes"),
    [
        (4, 2, [2, 2]),
        (5, 2, [2, 3]),
        (10, 3, [3, 3, 4]),
        (2, 1, [2]),
        (2, 2, [1, 1]),
        (7, 7, [1] * 7),
        (8, 4, [2, 2, 2, 2]),
        (11, 4, [2, 3, 3, 3]),
        (1000, 10, [100] * 10),
    ],
)
def test_batch_sizes(instances: int, batches: int, sizes: list[int]) -> None:
    assert batch_sizes(instances, batches) == sizes


@pytest.mark.parametrize(("instances", "batches"), [(4, 0), (4, 5), (2, -1)])
def test_batch_count_out_of_range_is_refused(instances: int, batches: int) -> None:
    with pytest.raises(ConfigError) as info:
        batch_sizes(instances, batches)
    assert info.value.problems[0][0] == "batches"
    assert info.value.problems[0][1] == batches


@given(st.integers(1, 2000).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_batch_sizes_properties(case: tuple[int, int]) -> None:
    n, b = case
    sizes = batch_sizes(n, b)
    assert sum(sizes) == n and len(sizes) == b
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes), "later batches take the extra instances"
    assert sizes[0] == min(sizes)


@given(st.integers(1, 300).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_plan_covers_every_slot_once_in_order(case: tuple[int, int]) -> None:
    n, b = case
    slots = [s for batch in plan_release(n, b).batches for s in batch.slots]
    assert slots == list(range(n))


@pytest.mark.parametrize(
    ("mode", "last", "pauses"),
    [
        (PauseMode.FIRST_BATCH, 3, [True, False, False]),
        (PauseMode.EVERY_BATCH, 3, [True, True, False]),
        (PauseMode.NONE, 3, [False, False, False]),
        (PauseMode.FIRST_BATCH, 1, [False]),
        (PauseMode.EVERY_BATCH, 1, [False]),
    ],
)
def test_pauses_after(mode: PauseMode, last: int, pauses: list[bool]) -> None:
    assert [pauses_after(k, last, mode) for k in range(1, last + 1)] == pauses


READY = SlotState("new", ready=True)
OLD = SlotState("old", ready=True)
STARTING = SlotState("new")
FAILED = SlotState("new", failed=True, reason="HTTP GET :8080/healthz answered 500")


@pytest.mark.parametrize(
    ("observed", "mode", "approved", "expected"),
    [
        ({}, PauseMode.NONE, set(), ("apply", 1, (0, 1))),
        ({0: OLD, 1: OLD, 2: OLD, 3: OLD}, PauseMode.NONE, set(), ("apply", 1, (0, 1))),
        ({0: READY, 1: OLD, 2: OLD, 3: OLD}, PauseMode.NONE, set(), ("apply", 1, (1,))),
        ({0: READY, 1: STARTING, 2: OLD, 3: OLD}, PauseMode.NONE, set(), ("wait", 1, ())),
        ({0: READY, 1: FAILED, 2: OLD, 3: OLD}, PauseMode.NONE, set(), ("fail", 1, (1,))),
        ({0: READY, 1: READY, 2: OLD, 3: OLD}, PauseMode.NONE, set(), ("apply", 2, (2, 3))),
        ({0: READY, 1: READY, 2: OLD, 3: OLD}, PauseMode.FIRST_BATCH, set(), ("pause", 1, ())),
        ({0: READY, 1: READY, 2: OLD, 3: OLD}, PauseMode.FIRST_BATCH, {1}, ("apply", 2, (2, 3))),
        ({0: READY, 1: READY, 2: OLD, 3: OLD}, PauseMode.EVERY_BATCH, set(), ("pause", 1, ())),
        ({s: READY for s in range(4)}, PauseMode.EVERY_BATCH, {1}, ("complete", None, ())),
        ({s: READY for s in range(4)}, PauseMode.EVERY_BATCH, set(), ("pause", 1, ())),
        ({0: READY, 1: READY, 2: READY, 3: FAILED}, PauseMode.NONE, set(), ("fail", 2, (3,))),
    ],
)
def test_next_step(observed: dict, mode: PauseMode, approved: set[int], expected: tuple) -> None:
    step = next_step(plan_release(4, 2), observed, "new", mode, approved)
    assert (step.kind, step.batch, step.slots) == expected


def test_failed_step_carries_reasons() -> None:
    step = next_step(plan_release(4, 2), {0: READY, 1: FAILED}, "new", PauseMode.NONE)
    assert step.reasons == {1: "HTTP GET :8080/healthz answered 500"}


slot_states = st.sampled_from([READY, OLD, STARTING, FAILED, SlotState(None)])


@given(st.integers(2, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n), st.lists(slot_states, min_size=n, max_size=n))),
       st.sampled_from(list(PauseMode)))
def test_next_step_never_skips_an_unfinished_batch(case: tuple, mode: PauseMode) -> None:
    n, b, states = case
    plan = plan_release(n, b)
    observed = dict(enumerate(states))
    step = next_step(plan, observed, "new", mode, approved=set(range(1, b + 1)))
    if step.kind == "complete":
        assert done_instances(plan, observed, "new") == n
    else:
        earlier = [s for batch in plan.batches[: step.batch - 1] for s in batch.slots]
        assert all(observed[s] == READY for s in earlier), "every batch before the one acted on is done"
        if step.kind == "apply":
            assert all(observed[s].revision != "new" for s in step.slots)


@given(st.integers(2, 12).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))))
def test_a_full_release_visits_each_batch_once(case: tuple[int, int]) -> None:
    """Simulate a runtime that makes applied slots ready: the plan applies each batch once and completes."""
    n, b = case
    plan = plan_release(n, b)
    observed: dict[int, SlotState] = {s: OLD for s in range(n)}
    approved: set[int] = set()
    applied: list[int] = []
    for _ in range(4 * b + 2):
        step = next_step(plan, observed, "new", PauseMode.EVERY_BATCH, approved)
        if step.kind == "complete":
            break
        if step.kind == "apply":
            applied.append(step.batch)
            observed.update({s: READY for s in step.slots})
        elif step.kind == "pause":
            approved.add(step.batch)
    assert step.kind == "complete"
    assert applied == list(range(1, b + 1))
    assert approved == set(range(1, b))


def test_the_pause_mode_type_names_exactly_the_pause_modes() -> None:
    from typing import get_args

    from cairn.plan import PauseMode, PauseModeName

    assert get_args(PauseModeName) == tuple(m.value for m in PauseMode)
