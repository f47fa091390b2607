"""cairn.procs: a recorded pid is ours only while pid and start time both match (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cairn.procs import ProcessRef, alive, start_time, stop_group


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def test_the_start_time_is_the_kernels_clock_ticks_since_boot() -> None:
    # /proc/PID/stat field 22: what the shims' status.json files hold, so old records still compare.
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rpartition(")")[2].split()
    assert start_time(os.getpid()) == int(fields[19])


def test_a_reused_pid_is_not_the_process_that_was_recorded() -> None:
    me = ProcessRef.of(os.getpid())
    assert me is not None and me.alive()
    # The same pid with another start time is what a reused pid looks like from a state file.
    assert not ProcessRef(me.pid, me.start - 1).alive()
    assert not alive(me.pid, None) and not alive(None, me.start)


def test_an_exited_process_is_gone_even_before_it_is_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ref = ProcessRef.of(proc.pid)
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, still a zombie
    assert start_time(proc.pid) is None and not (ref and ref.alive())
    proc.wait()


def test_records_round_trip_and_a_record_without_a_start_names_no_process() -> None:
    me = ProcessRef.of(os.getpid())
    assert me is not None and ProcessRef.from_record(me.record()) == me
    assert ProcessRef.from_record({"pid": os.getpid()}) is None
    assert ProcessRef.from_record({"pid": "1", "start": 5}) is None
    assert ProcessRef.from_record(None) is None


def test_stop_group_never_signals_a_process_the_record_does_not_name() -> None:
    proc = _sleeper()
    try:
        ref = ProcessRef.of(proc.pid)
        assert ref is not None
        assert stop_group(ProcessRef(ref.pid, ref.start + 1), timeout_s=1) is False
        assert proc.poll() is None, "a process with another start time was signalled"
        assert stop_group(ref, timeout_s=5) is True
        assert not ref.alive()
    finally:
        proc.kill()
        proc.wait()


def test_listens_tells_the_process_holding_a_port_from_one_that_does_not() -> None:
    import socket

    from cairn.procs import listens

    server = subprocess.Popen([sys.executable, "-c", "import socket, sys, time\n"
                               "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
                               "print(s.getsockname()[1], flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    other = _sleeper()
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        ref, stranger = ProcessRef.of(server.pid), ProcessRef.of(other.pid)
        assert ref is not None and stranger is not None
        assert listens(ref, port)
        assert not listens(stranger, port), "the port is held by another process"
        me = ProcessRef.of(os.getpid())
        assert me is not None and listens(me, port), "what a descendant listens on counts for its ancestor"
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            assert not listens(ref, unused.getsockname()[1])
    finally:
        for proc in (server, other):
            proc.kill()
            proc.wait()
