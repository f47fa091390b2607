"""Apply one batch, wait for it to be healthy, observe an environment: the release's tasks."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator, Sequence

# Both imported here rather than where they are first used (Prefect's Task.__call__ imports its
# visualization module, graphviz included, at a run's first task call; ``connect`` the local
# runtime's client at the first connect): the warm start's template process imports the flows,
# so every run forked from it starts with both, ~25 ms sooner to its first batch.
import prefect.utilities.visualization  # noqa: F401
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

import cairn.runtimes.local.client  # noqa: F401
from cairn.errors import BatchFailed
from cairn.plan import SlotState
from cairn.revision import Revision
from cairn.runtime import Instance, Phase
from cairn.tasks.context import Target, pull_login_for, retry_temporary, secrets_for, target

# How long one long poll may wait without a change: the deadline is checked in between.
LONG_POLL_S = 5.0

# Called by wait_healthy the moment it sees its batch healthy (see ``on_healthy``).
_healthy_hook: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar("cairn_healthy_hook", default=None)


@contextlib.contextmanager
def on_healthy(hook: Callable[[], None]) -> Iterator[None]:
    """Run ``hook`` as soon as the wait_healthy called inside sees its batch healthy, before the
    task returns: the flow starts the batch boundary's reads there, not after Prefect has recorded
    the task's end. A context variable rather than a task parameter: a callable is no input of
    the task to show in the UI, and the task runs in the flow's thread and context."""
    token = _healthy_hook.set(hook)
    try:
        yield
    finally:
        _healthy_hook.reset(token)


def observe(revision: Revision) -> list[Instance]:
    """Every instance of the revision's environment, read fresh (not a task: a read, no side effect)."""
    t = target(revision)
    return t.runtime.observe(t.env)


def slot_states(instances: Sequence[Instance]) -> dict[int, SlotState]:
    return {
        i.slot: SlotState(i.revision, ready=i.ready, failed=i.phase is Phase.FAILED, reason=i.reason)
        for i in instances
    }


# Never cached, never persisted. Prefect's default for a task in a flow that persists its result is
# to key a cache on the inputs and the flow run: a re-run of the order (a resume, a retry) would then
# take a batch's earlier answer instead of acting on the instances as they are now (a second retry
# did not replace the failed instances again), and every call paid for hashing its inputs and
# writing a result file.
@task(name="apply-batch", task_run_name="apply batch {batch} ({slots})", retries=3, retry_delay_seconds=2,
      retry_condition_fn=retry_temporary, cache_policy=NO_CACHE, persist_result=False)
def apply_batch(order: str, batch: int, slots: list[int], revision: Revision, replace_failed: bool = False) -> list[int]:
    """Bring ``slots`` to ``revision``. Idempotent: slots already on it are left alone."""
    t = target(revision)
    t.runtime.ensure(t.env, slots, revision, secrets=secrets_for(revision), replace_failed=replace_failed, order=order,
                     pull_login=pull_login_for(revision))
    get_run_logger().info("batch %s: slots %s brought to revision %s", batch, slots, revision.short)
    return slots


def _budget_s(revision: Revision) -> float:
    spec = revision.spec
    check = spec.health_check.budget_s if spec.health_check else 0.0
    # Replacing an instance runs its predecessor's PreStop and grace period first.
    return check + spec.lifecycle.termination_grace_period_s + 60.0


@task(name="wait-healthy", task_run_name="wait for batch {batch} to be healthy", retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_temporary, cache_policy=NO_CACHE, persist_result=False)
def wait_healthy(order: str, batch: int, slots: list[int], revision: Revision) -> dict[str, float]:
    """Wait until every slot runs ``revision`` and is ready; fail the batch on the first failed
    instance or when the health check's budget runs out. Returns seconds to ready per instance."""
    t = target(revision)
    started = time.monotonic()
    deadline = started + _budget_s(revision)
    ready_at: dict[str, float] = {}
    seen: list[Instance] | None = None  # the last observation: the next read answers once it changed
    while True:
        # The runtime's long poll (cairn/runtime.py): the first read answers at once, each next
        # one as soon as the batch's instances differ from the last, or after LONG_POLL_S.
        wait_s = min(LONG_POLL_S, max(0.0, deadline - time.monotonic()))
        seen = t.runtime.observe_slots(t.env, slots, unless=seen, wait_s=wait_s)
        current = {i.slot: i for i in seen if i.slot in slots}
        failed = {
            i.name: i.reason or "failed"
            for i in current.values()
            if i.revision == revision.digest and i.phase is Phase.FAILED
        }
        settled = all(i.revision == revision.digest and (i.ready or i.phase is Phase.FAILED) for i in current.values())
        if failed and (settled and len(current) == len(slots) or time.monotonic() > deadline):
            # Report every failed instance of the batch, not just the first to fail.
            raise BatchFailed(batch, failed, _events(t, failed))
        for i in current.values():
            if i.revision == revision.digest and i.ready:
                ready_at.setdefault(i.name, time.monotonic() - started)
        if len(ready_at) == len(slots) and all(i.ready and i.revision == revision.digest for i in current.values()):
            hook = _healthy_hook.get()
            if hook is not None:
                hook()
            return ready_at
        if time.monotonic() > deadline:
            late = {t.env.instance(s): _why_not_ready(current.get(s), revision) for s in slots if t.env.instance(s) not in ready_at}
            raise BatchFailed(batch, late, _events(t, late))


def _why_not_ready(instance: Instance | None, revision: Revision) -> str:
    if instance is None:
        return "no instance exists for this slot"
    if instance.revision != revision.digest:
        return f"still runs revision {instance.revision[:12]}"
    return f"not healthy within the health check's budget ({instance.phase}: {instance.reason or 'no reason given'})"


def _events(t: Target, names: dict[str, str]) -> list[str]:
    lines = []
    for name in sorted(names):
        try:
            for e in t.runtime.events(t.env, instance=name)[-8:]:
                lines.append(f"{name} {e.type} {e.reason}: {e.message}")
        except Exception:  # noqa: BLE001 - events enrich the message; their absence must not hide the failure
            continue
    return lines


@task(name="retire-slots", task_run_name="retire slots {slots}", retries=3, retry_delay_seconds=2, retry_condition_fn=retry_temporary,
      cache_policy=NO_CACHE, persist_result=False)
def retire_slots(order: str, slots: list[int], revision: Revision) -> list[int]:
    """Terminate instances beyond the revision's instance count (a release that scales down)."""
    t = target(revision)
    t.runtime.terminate(t.env, slots)
    return slots
