"""The release plan: batch arithmetic and the next step, as pure functions of observed state.

Like an Argo Rollout's steps, a release is a list of explicit batches; where it stands is never
remembered, it is derived each time from what the runtime reports (:func:`next_step`). That is
what makes retry, crash recovery and resume-after-restart correct: after any interruption the
flow observes the instances and asks this module what to do.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from cairn.errors import ConfigError


class PauseMode(StrEnum):
    FIRST_BATCH = "first_batch"
    """Pause after the first batch; once resumed the rest go on without pausing."""
    EVERY_BATCH = "every_batch"
    """Pause after every batch but the last."""
    NONE = "none"
    """Never pause."""


# The same three names as a type, for forms and payloads that want a Literal (Prefect renders a
# Literal parameter as a dropdown); tests/unit/test_plan.py holds the two equal.
PauseModeName = Literal["first_batch", "every_batch", "none"]


def batch_sizes(instances: int, batches: int) -> list[int]:
    """Sizes of ``batches`` batches over ``instances``: they differ by at most one, and the later
    batches take the extra instances, so the first batch (the canary) is the smallest.

    >>> batch_sizes(4, 2)
    [2, 2]
    >>> batch_sizes(5, 2)
    [2, 3]
    >>> batch_sizes(10, 3)
    [3, 3, 4]
    >>> batch_sizes(3, 3)
    [1, 1, 1]
    """
    if not isinstance(batches, int) or isinstance(batches, bool) or not 1 <= batches:
        raise ConfigError.single("batches", batches, "must be a whole number of at least 1")
    if batches > instances:
        raise ConfigError.single("batches", batches, f"must be at most the instance count ({instances}): 1 <= batches <= instances")
    base, extra = divmod(instances, batches)
    return [base + (1 if k >= batches - extra else 0) for k in range(batches)]


@dataclass(frozen=True)
class Batch:
    index: int
    """1-based, as people count batches."""
    slots: tuple[int, ...]

    @property
    def size(self) -> int:
        return len(self.slots)


@dataclass(frozen=True)
class ReleasePlan:
    instances: int
    batches: tuple[Batch, ...]

    @property
    def last(self) -> int:
        return len(self.batches)

    def batch(self, index: int) -> Batch:
        return self.batches[index - 1]


def plan_release(instances: int, batches: int) -> ReleasePlan:
    """Slots 0..N-1 split into consecutive batches.

    >>> [b.slots for b in plan_release(5, 2).batches]
    [(0, 1), (2, 3, 4)]
    """
    sizes = batch_sizes(instances, batches)
    out, start = [], 0
    for index, size in enumerate(sizes, start=1):
        out.append(Batch(index, tuple(range(start, start + size))))
        start += size
    return ReleasePlan(instances, tuple(out))


def pauses_after(batch: int, last: int, mode: PauseMode) -> bool:
    """Whether the pause mode asks for approval after ``batch`` (1-based) of ``last``.

    >>> [pauses_after(k, 3, PauseMode.EVERY_BATCH) for k in (1, 2, 3)]
    [True, True, False]
    >>> [pauses_after(k, 3, PauseMode.FIRST_BATCH) for k in (1, 2, 3)]
    [True, False, False]
    """
    if batch >= last:
        return False
    if mode is PauseMode.EVERY_BATCH:
        return True
    if mode is PauseMode.FIRST_BATCH:
        return batch == 1
    return False


@dataclass(frozen=True)
class SlotState:
    """What the runtime reports of one slot, reduced to what the plan needs."""

    revision: str | None
    """Digest of the revision the slot runs; None when no instance exists."""
    ready: bool = False
    failed: bool = False
    reason: str | None = None


StepKind = Literal["apply", "wait", "pause", "fail", "complete"]


@dataclass(frozen=True)
class Step:
    kind: StepKind
    batch: int | None = None
    slots: tuple[int, ...] = ()
    """For apply: the slots to bring to the revision; for fail: the failed slots."""
    reasons: Mapping[int, str] = field(default_factory=dict)

    @property
    def at(self) -> int:
        """The batch this step acts on: every kind of step but ``complete`` has one."""
        if self.batch is None:
            raise ValueError(f"a {self.kind} step acts on no batch")
        return self.batch


def next_step(
    plan: ReleasePlan,
    observed: Mapping[int, SlotState],
    target: str,
    mode: PauseMode,
    approved: Set[int] = frozenset(),
) -> Step:
    """The one thing to do next, from what runs now.

    Batches are taken in order; the first that is not done decides. A batch is done when each
    of its slots runs ``target`` and is ready. A failed slot fails the batch (a failed batch
    stops the order: no later batch starts). A done batch that the pause mode stops after, and
    that nobody approved yet, asks for a pause.

    >>> plan = plan_release(4, 2)
    >>> ok = SlotState("r2", ready=True)
    >>> next_step(plan, {}, "r2", PauseMode.NONE)
    Step(kind='apply', batch=1, slots=(0, 1), reasons={})
    >>> next_step(plan, {0: ok, 1: ok}, "r2", PauseMode.FIRST_BATCH)
    Step(kind='pause', batch=1, slots=(), reasons={})
    >>> next_step(plan, {0: ok, 1: ok}, "r2", PauseMode.FIRST_BATCH, approved={1}).kind
    'apply'
    >>> next_step(plan, {s: ok for s in range(4)}, "r2", PauseMode.EVERY_BATCH, approved={1}).kind
    'complete'
    """
    for batch in plan.batches:
        states = {slot: observed.get(slot, SlotState(None)) for slot in batch.slots}
        stale = tuple(slot for slot, state in states.items() if state.revision != target)
        if stale:
            return Step("apply", batch.index, stale)
        failed = {slot: state.reason or "failed" for slot, state in states.items() if state.failed}
        if failed:
            return Step("fail", batch.index, tuple(sorted(failed)), failed)
        if not all(state.ready for state in states.values()):
            return Step("wait", batch.index)
        if pauses_after(batch.index, plan.last, mode) and batch.index not in approved:
            return Step("pause", batch.index)
    return Step("complete")


def done_instances(plan: ReleasePlan, observed: Mapping[int, SlotState], target: str) -> int:
    """How many slots run ``target`` and are ready: the numerator of a progress bar."""
    return sum(1 for slot in range(plan.instances) if (s := observed.get(slot)) and s.revision == target and s.ready)
