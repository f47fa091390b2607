"""The local runtime's pure parts: logs, events, addresses, back-off, state directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.runtimes.local import events, logs, netns
from cairn.runtimes.local.supervisor import backoff_delay


def test_appended_lines_read_back_in_order_with_rotated_files_first(tmp_path: Path) -> None:
    (tmp_path / "c.log.2").write_text("t0 stdout oldest\n")
    (tmp_path / "c.log.1").write_text("t1 stdout older\n")
    for i in range(3):
        logs.append_line(tmp_path / "c.log", "/acs/logs/access.log", f"line {i}\n")
    lines = list(logs.read(tmp_path / "c.log"))
    assert [line.split(" ", 1)[1] for line in lines] == [
        "stdout oldest", "stdout older", "/acs/logs/access.log line 0", "/acs/logs/access.log line 1", "/acs/logs/access.log line 2"]
    assert lines[-1][:4].isdigit() and list(logs.read(tmp_path / "c.log", tail=1)) == lines[-1:]


def test_events_round_trip_with_warnings_marked(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    events.record(path, "a-0", "Started", "ok")
    events.record(path, "a-1", "OOMKilled", "over")
    with path.open("a") as fh:
        fh.write('{"cut": ')  # a line torn by a crash is skipped
    found = events.read(path)
    assert [(e.instance, e.reason, e.warning) for e in found] == [("a-0", "Started", False), ("a-1", "OOMKilled", True)]
    assert [e.reason for e in events.read(path, instance="a-1")] == ["OOMKilled"]


def test_addresses_skip_the_bridge_range_and_used_ones() -> None:
    assert netns.allocate(set()) == "10.213.1.1"
    assert netns.allocate({"10.213.1.1"}) == "10.213.1.2"
    assert netns.allocate({f"10.213.1.{i}" for i in range(1, 255)}) == "10.213.2.1"
    assert netns.host_veth("10.213.255.254") == "cn255254"


def test_back_off_doubles_to_thirty_times_the_base() -> None:
    assert [backoff_delay(10, n) for n in range(7)] == [10, 20, 40, 80, 160, 300, 300]


def test_an_unreachable_agent_is_a_temporary_error(tmp_path: Path) -> None:
    from cairn.errors import TemporaryError
    from cairn.runtime import EnvRef
    from cairn.runtimes.local import LocalRuntime, agent_status

    with pytest.raises(TemporaryError) as caught:
        LocalRuntime(tmp_path).observe(EnvRef("local", "a", "test"))
    assert caught.value.hint and "agent start" in caught.value.hint
    status = agent_status(tmp_path)
    assert status["running"] is False and status["instances"] == 0 and status["socket"] == str(tmp_path / "agent.sock")


def test_a_slot_being_replaced_has_a_live_and_a_retiring_generation(tmp_path: Path) -> None:
    from cairn.runtime import EnvRef
    from cairn.runtimes.local.state import RETIRING, EnvDir

    envdir = EnvDir.of(tmp_path, EnvRef("c", "shop", "production"))
    first = envdir.fresh("shop-production-1")
    assert first == envdir.instance("shop-production-1")
    first.mkdir(parents=True)
    envdir.fresh("shop-production-10").mkdir()  # another slot whose name starts alike
    (first / RETIRING).touch()
    second = envdir.fresh("shop-production-1")
    assert second.name == "shop-production-1~1"
    second.mkdir()
    assert envdir.generations("shop-production-1") == [first, second]
    assert envdir.live("shop-production-1") == second
    assert envdir.fresh("shop-production-1").name == "shop-production-1~2"


def test_the_watcher_wakes_a_waiter_on_a_status_write_and_not_otherwise(tmp_path: Path) -> None:
    import threading
    import time

    from cairn.runtimes.local.state import write_json
    from cairn.runtimes.local.watch import Watcher

    watcher = Watcher()
    assert watcher.live, "inotify is available on Linux"
    instance, other = tmp_path / "a", tmp_path / "b"
    instance.mkdir()
    other.mkdir()
    watcher.watch([instance])
    seen = watcher.count([instance])
    write_json(other / "status.json", {"phase": "running"})  # not watched: no wake-up
    began = time.monotonic()
    watcher.wait([instance], seen, 0.3)
    assert time.monotonic() - began >= 0.3 and watcher.count([instance]) == seen

    writer = threading.Thread(target=write_json, args=(instance / "status.json", {"phase": "running"}))
    writer.start()
    watcher.wait([instance], seen, 30)  # returns with the write's rename, not after 30 s
    writer.join()
    assert watcher.count([instance]) != seen


def test_a_closed_watcher_answers_a_long_poll_at_once(tmp_path: Path) -> None:
    """The agent closes it when it stops: a long poll then answers with what it reads, instead
    of holding the agent's shutdown for up to a minute."""
    import threading

    from cairn.runtimes.local.watch import Watcher

    watcher = Watcher()
    answers: list[str] = []
    poll = threading.Thread(target=lambda: answers.append(
        watcher.until_changed(lambda: [tmp_path], lambda _: "same", "same", wait_s=600, recheck_s=600)))
    poll.start()
    poll.join(0.5)
    assert poll.is_alive() and not answers, "nothing changed: the poll waits"
    watcher.close()
    poll.join(30)
    assert answers == ["same"]
