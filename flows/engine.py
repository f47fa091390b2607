"""The loop every release and rollback runs: observe, ask the plan for the next step, do it.

Nothing about progress is remembered between iterations: each one reads the instances from the
runtime and asks ``cairn.plan.next_step``. So a re-run of the flow (after a suspend, a crash, a
dashboard retry or a restart of everything) picks up exactly where the instances are.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Future
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.context import FlowRunContext

from cairn.background import OnDemand
from cairn.errors import BatchFailed
from cairn.flows import approval
from cairn.orders import records
from cairn.orders.history import ModeRecord
from cairn.plan import PauseMode, next_step, plan_release
from cairn.revision import Revision
from cairn.tasks.batch import apply_batch, observe, on_healthy, retire_slots, slot_states, wait_healthy
from cairn.tasks.report import OrderReport


def current_run() -> tuple[UUID, int]:
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None, "runs only inside a flow"
    return context.flow_run.id, context.flow_run.run_count


def drive(revision: Revision, batches: int, default_mode: PauseMode, *, hot_pause_s: float, suspend_timeout_s: float,
          title: str, changes: Future[str] | None = None) -> dict[str, Any]:
    run_id, run_count = current_run()
    order = str(run_id)
    logger = get_run_logger()
    plan = plan_release(revision.spec.instances, batches)
    report = OrderReport(run_id, plan, revision, title, changes)
    approved: set[int] = set()
    replaced_failed = False
    # The mode only decides at batch boundaries, where it is read fresh (below): no read up front,
    # which keeps an API call off the way to the first batch and to a resumed one.
    mode = default_mode
    mode_read: Future[ModeRecord] | None = None  # started when the health wait before a boundary succeeds
    # The artifacts are written in the background (report.update returns at once); whatever ends
    # this process's run (done, a failed batch, a suspend) leaves them showing where it stands.
    # The release and rollback flows carry ``flush_finished`` as their completion hook.
    try:
        while True:
            instances = observe(revision)
            step = next_step(plan, slot_states(instances), revision.digest, mode, approved)
            if step.kind == "pause" or (step.kind == "apply" and (step.batch or 0) > 1):
                # A batch boundary: the only place a switched pause mode changes what happens next.
                mode = (mode_read.result() if mode_read else records.read_mode(run_id, default_mode)).mode
                step = next_step(plan, slot_states(instances), revision.digest, mode, approved)
            mode_read = None
            if step.kind == "apply":
                # Dispatch first, report later: the artifacts are news, the next batch is the job.
                apply_batch(order, step.at, list(step.slots), revision)
                continue
            report.update(instances)
            if step.kind == "wait":
                batch = plan.batch(step.at)
                # A batch boundary follows a healthy batch but the last: its mode read starts the moment
                # the wait sees the batch healthy and runs alongside the observe below, not after it.
                boundary = OnDemand(lambda: records.read_mode(run_id, default_mode)) if batch.index < len(plan.batches) else None
                try:
                    with on_healthy(boundary.start if boundary else lambda: None):
                        wait_healthy(order, batch.index, list(batch.slots), revision)
                except BatchFailed:
                    with contextlib.suppress(Exception):  # the failure is the news; a failed read must not hide it
                        report.update(observe(revision))  # the table shows which instances failed, and why
                    raise
                if boundary is not None:
                    boundary.start()  # a no-op: the wait started it (kept so that no path leaves the read unstarted)
                    mode_read = boundary
            elif step.kind == "fail":
                # A re-run (dashboard retry, `cairn release retry`) replaces the failed instances once.
                if run_count > 1 and not replaced_failed:
                    replaced_failed = True
                    apply_batch(order, step.at, list(step.slots), revision, replace_failed=True)
                    continue
                names = {f"{revision.app}-{revision.environment}-{s}": r for s, r in step.reasons.items()}
                raise BatchFailed(step.at, names)
            elif step.kind == "pause":
                report.flush()  # the table shows the batch awaiting approval while someone looks
                answer = approval.await_approval(step.at, mode, hot_window_s=hot_pause_s, suspend_timeout_s=suspend_timeout_s)
                approved.add(step.at)
                logger.info("batch %s approved by %s: %s", step.batch, answer.approved_by, answer.comment or "(no comment)")
                if PauseMode(answer.pause_mode) is not mode:
                    mode = records.write_mode(run_id, PauseMode(answer.pause_mode), by=answer.approved_by,
                                             why=f"resume after batch {step.batch}", default=default_mode).mode
            else:
                extra = sorted(i.slot for i in instances if i.slot >= plan.instances)
                if extra:
                    retire_slots(order, extra, revision)
                    report.update(observe(revision))
                logger.info("%s: every instance runs revision %s", title, revision.short)
                report.flush_on_completion()  # the order is done: its report is news, written once that is recorded
                return {"revision": revision.digest, "instances": plan.instances, "batches": batches}
    except BaseException:
        report.flush()  # a failed batch, a suspend, a cancel: the table shows where it stands, before the state
        raise
