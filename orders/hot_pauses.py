"""Who holds a hot pause, and what becomes of one whose process is gone.

A hot pause (``flows.approval``) waits for its approval inside the order's flow process. Prefect
knows the run as Paused, not which process waits: if that process dies (SIGKILL, a crash of the
machine, a stop it did not survive), Prefect keeps the Paused state, and a resume makes a Running
run with no process behind it: an order that shows `deploying` for good.

So a hot pause records its holder (host, boot, pid and the pid's start time) in a Prefect
Variable while it waits, and removes it when it ends. Whoever can look at that host's processes
(the platform starting its worker, ``cairn release resume``) turns a hot pause whose holder is
gone into a **suspend**: the same pause key and input keyset, so an approval given before or after
still counts, and a resume makes the worker start the order again, which goes on from the instances
as they are (the batches done are not redone). A holder on another host is left to that host.
"""

from __future__ import annotations

import contextlib
import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from uuid import UUID

from cairn.blocks import api
from cairn.errors import NotFound
from cairn.orders import tags
from cairn.procs import ProcessRef, alive

HOT_PAUSED = "Paused"  # the name of a hot pause's state; a suspend's is "Suspended"


def variable_name(run_id: UUID | str) -> str:
    return f"cairn_hold_{UUID(str(run_id)).hex}"


@lru_cache(maxsize=1)
def _boot_id() -> str:
    # Pids and their start times (clock ticks since boot) name a process only within one boot.
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def this_process() -> dict[str, Any]:
    me = ProcessRef.of(os.getpid())
    assert me is not None
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": me.pid, "start": me.start}


def is_gone(holder: dict[str, Any]) -> bool | None:
    """True when the holder was a process of this host that no longer runs; None when it is
    another host's to say."""
    if holder.get("host") != socket.gethostname():
        return None
    if holder.get("boot") != _boot_id():
        return True
    return not alive(holder.get("pid"), holder.get("start"))


def hold(run_id: UUID) -> None:
    """Record this process as the holder of ``run_id``'s hot pause (over cairn's kept-alive
    connection: the pause's first poll should not wait for a Prefect client)."""
    let_go(run_id)  # a record left by a holder that died (a re-run's pause writes its own)
    api.post("variables/", {"name": variable_name(run_id), "value": this_process(), "tags": [tags.CAIRN]}, "the hot pause's holder")


def let_go(run_id: UUID) -> None:
    with contextlib.suppress(NotFound):
        api.delete(f"variables/name/{variable_name(run_id)}", "the hot pause's holder")


def suspend_if_orphaned(client: Any, run: Any) -> bool:
    """Turn ``run``'s hot pause into a suspend if its holder is a gone process of this host.
    Returns whether it did. A run without a holder record is left alone: its pause began before
    holders were recorded, or its process is between the Paused state and the record."""
    from prefect.client.schemas.objects import State
    from prefect.states import Suspended

    state = run.state
    if state is None or not state.is_paused() or state.name != HOT_PAUSED:
        return False
    variable = client.read_variable_by_name(variable_name(run.id))
    if variable is None or not isinstance(variable.value, dict) or not is_gone(variable.value):
        return False
    holder = variable.value
    suspended: State[Any] = Suspended(timeout_seconds=30 * 86400, pause_key=state.state_details.pause_key)
    suspended.state_details.run_input_keyset = state.state_details.run_input_keyset
    suspended.message = (f"suspended: the process that held its hot pause (pid {holder.get('pid')} on {holder.get('host')}) "
                         "is gone; a resume starts the order again from the next batch")
    client.set_flow_run_state(run.id, suspended, force=True)
    let_go(run.id)
    return True


def suspend_orphans() -> list[UUID]:
    """Every hot-paused order of this host whose holder is gone, suspended (the platform's worker
    starting: the processes of the one before it are gone or still running, and this tells which)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName, FlowRunFilterTags

    done = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tags.CAIRN]), state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[HOT_PAUSED]))), limit=200)
        for run in runs:
            if suspend_if_orphaned(client, run):
                done.append(run.id)
    return done
