"""Approval between batches: a hot pause that becomes a suspend.

Most approvals come within minutes, some after days. For ``hot_window_s`` the flow stays paused
in its process and polls every 0.25 s, so an approval resumes it almost at once (Prefect's own
pause polls every 10 s). Then it turns the pause into a **suspend**: the process exits, nothing
is held, and a resume makes the worker start the flow again from the top. The re-run observes the
instances (done batches are skipped) and finds the approval already given under its key.

Each batch has fixed keys, ``approve-after-batch-K`` (hot) and ``approve-after-batch-K-cold``:
Prefect keeps inputs by key, so approvals given stay given across suspends and a dashboard retry,
and batches not yet approved still ask.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import Pause
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.input.actions import read_flow_run_input
from prefect.input.run_input import keyset_from_base_key
from prefect.states import Paused, Running
from prefect.utilities.engine import propose_state_sync
from pydantic import Field

from cairn import sync
from cairn.plan import PauseMode, PauseModeName

HOT_POLL_S = 0.25


class Approval(RunInput):
    """Approve the next batch of this release order."""

    pause_mode: PauseModeName = Field(
        title="Pause mode",
        description="How the rest of the release pauses: after the **first batch** only, after **every batch**, or **none**.",
    )
    comment: str = Field("", title="Comment", description="Why you approve; kept with the order.")
    approved_by: str = Field("prefect-ui", title="Approved by")


def keys(batch: int) -> tuple[str, str]:
    return f"approve-after-batch-{batch}", f"approve-after-batch-{batch}-cold"


def given(flow_run_id: UUID, batch: int) -> Approval | None:
    """The approval already given for ``batch`` (hot or cold), if any."""
    hot, cold = keys(batch)
    for base in (f"paused-{hot}", f"suspended-{cold}"):
        value = sync.result(read_flow_run_input(keyset_from_base_key(base)["response"], flow_run_id=flow_run_id))
        if value:
            return Approval(**value)
    return None


def await_approval(batch: int, mode: PauseMode, *, hot_window_s: float, suspend_timeout_s: float) -> Approval:
    """Block until the batch is approved: hot for ``hot_window_s``, then suspended (process exits)."""
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    run_id = context.flow_run.id
    logger = get_run_logger()
    existing = given(run_id, batch)
    if existing is not None:
        return existing
    hot, cold = keys(batch)
    form = Approval.with_initial_data(description=f"Approve batch {batch + 1} and after.", pause_mode=str(mode))
    if hot_window_s > 0:
        approval = _hot_pause(run_id, hot, form, hot_window_s)
        if approval is not None:
            return approval
        logger.info("no approval after %.0fs: suspending; the run holds no process until resumed", hot_window_s)
    before = _ignore_termination_from_now_on()
    try:
        return sync.result(suspend_flow_run(wait_for_input=form, key=cold, timeout=int(suspend_timeout_s)))
    except Pause:
        raise  # suspended: the process exits on its own
    except BaseException:
        if before is not None:
            signal.signal(signal.SIGTERM, before)  # not suspended: a stop still ends the run
        raise


def _ignore_termination_from_now_on() -> Any:
    """A suspend ends the process, and a SIGTERM (the worker stopping) between the Suspended state
    and the process's exit made Prefect's engine report the suspended run Crashed, overwriting the
    suspend (it spares only final states): the order could then not be resumed. From here on the
    process is leaving anyway, so a stop has nothing to end; before the Suspended state lands, a
    stop ignored still leaves a run that is suspended and resumable."""
    if threading.current_thread() is not threading.main_thread():
        return None  # only the main thread may set handlers; Prefect runs a sync flow there
    return signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _hot_pause(run_id: UUID, key: str, form: type[Approval], window_s: float) -> Approval | None:
    # The server fails a pause whose timeout passes; give it slack beyond our window so the
    # switch to a suspend is ours to make.
    proposed: State[Any] = Paused(timeout_seconds=int(window_s + 600), reschedule=False, pause_key=key)
    keyset = keyset_from_base_key(f"paused-{key}")
    proposed.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=proposed, flow_run_id=run_id)
        if state.is_running():  # this pause fired before (a re-run): its input is stored
            return sync.result(form.load(keyset, flow_run_id=run_id))
        sync.result(form.save(keyset, flow_run_id=run_id))
        get_run_logger().info("paused for approval (key %s): resume from the Prefect UI or `cairn release resume`", key)
        deadline = time.monotonic() + window_s
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_running():
                return sync.result(form.load(keyset, flow_run_id=run_id))
            if run.state and not run.state.is_paused():
                raise RuntimeError(f"release left its pause as {run.state.type.value}")  # cancelled: stop here
            time.sleep(HOT_POLL_S)
        # Back to Running ourselves so the suspend is allowed; an approval that raced in is kept.
        client.set_flow_run_state(run_id, Running(), force=True)
        value = sync.result(read_flow_run_input(keyset["response"], flow_run_id=run_id))
        return Approval(**value) if value else None
