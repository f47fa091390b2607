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

import os
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
from cairn.background import in_background
from cairn.orders import hot_pauses
from cairn.plan import PauseMode, PauseModeName

HOT_POLL_S = 0.25
# What a stopping platform sends a run: the worker's group gets SIGTERM, Prefect's worker passes
# SIGINT on to its processes, and the warm start client forwards each of them (and SIGHUP).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


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
    existing = given(run_id, batch)
    if existing is not None:
        return existing
    hot, cold = keys(batch)
    form = Approval.with_initial_data(description=f"Approve batch {batch + 1} and after.", pause_mode=str(mode))
    if hot_window_s > 0:
        approval = _hot_pause(run_id, hot, form, hot_window_s)
        if approval is not None:
            return approval
    before = _ignore_termination_from_now_on()
    try:
        return sync.result(suspend_flow_run(wait_for_input=form, key=cold, timeout=int(suspend_timeout_s)))
    except Pause:
        raise  # suspended: the process exits on its own
    except BaseException:
        for sig, handler in before.items():
            signal.signal(sig, handler)  # not suspended: a stop still ends the run
        raise


def _ignore_termination_from_now_on() -> dict[int, Any]:
    """A suspend ends the process, and a stop signal (the worker stopping) between the Suspended
    state and the process's exit made Prefect's engine report the suspended run Crashed,
    overwriting the suspend (it spares only final states): the order could then not be resumed.
    From here on the process is leaving anyway, so a stop has nothing to end; before the
    Suspended state lands, a stop ignored still leaves a run that is suspended and resumable.
    Returns the handlers it replaced (none off the main thread, where none may be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}  # only the main thread may set handlers; Prefect runs a sync flow there
    return {sig: signal.signal(sig, signal.SIG_IGN) for sig in STOP_SIGNALS}


class _StopRequests(threading.Event):
    previous: dict[int, Any]


def _stop_requests() -> _StopRequests | None:
    """A stop signal during the hot pause, noted instead of ending the process (a SIGINT would
    raise KeyboardInterrupt mid-call, and Prefect's engine would report the run Crashed): the
    pause then becomes a suspend before the process exits. When one fired, the handlers stay
    until the process is gone, so no second signal interrupts the suspend."""
    if threading.current_thread() is not threading.main_thread():
        return None
    requests = _StopRequests()
    requests.previous = {sig: signal.signal(sig, lambda _signum, _frame: requests.set()) for sig in STOP_SIGNALS}
    return requests


def _console_gone() -> None:
    """The run's stdout and stderr are pipes to the worker, which is stopping: the next log line
    printed there would meet a broken pipe, on which Prefect's console handler (Rich) raises
    SystemExit, killing the run before it suspends. Its logs still reach the API."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _restore(requests: _StopRequests | None) -> None:
    if requests is not None:
        for sig, handler in requests.previous.items():
            signal.signal(sig, handler)


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
        hot_pauses.hold(run_id)  # so that a restart finds this pause's process gone, if it is
        get_run_logger().info("paused for approval (key %s): resume from the Prefect UI or `cairn release resume`", key)
        stopping = _stop_requests()
        deadline = time.monotonic() + window_s
        while time.monotonic() < deadline:
            run = client.read_flow_run(run_id)
            if run.state and run.state.is_running():
                in_background(hot_pauses.let_go, run_id)  # off the way from the approval to the next batch
                _restore(stopping)
                return sync.result(form.load(keyset, flow_run_id=run_id))
            if run.state and not run.state.is_paused():
                _restore(stopping)
                raise RuntimeError(f"release left its pause as {run.state.type.value}")  # cancelled: stop here
            if stopping is not None and stopping.is_set():
                # The platform is stopping (`cairn down`): suspend now, while the server still
                # answers, rather than die holding a pause nobody could resume.
                _console_gone()
                get_run_logger().info("the platform is stopping: suspending; resume the order once it is back")
                break
            time.sleep(HOT_POLL_S)
        else:
            _restore(stopping)
            get_run_logger().info("no approval after %.0fs: suspending; the run holds no process until resumed", window_s)
        hot_pauses.let_go(run_id)
        # Back to Running ourselves so the suspend is allowed; an approval that raced in is kept.
        client.set_flow_run_state(run_id, Running(), force=True)
        value = sync.result(read_flow_run_input(keyset["response"], flow_run_id=run_id))
        return Approval(**value) if value else None
