"""Instances start, serve on their own address, are replaced, stay put when ensured twice, go away."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import httpx
import pytest

from cairn import packages
from cairn.runtime import Phase
from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow


def version_of(address: str | None) -> str:
    assert address
    return httpx.get(f"http://{address}:8080/version", timeout=5).text.strip()


def test_instances_become_ready_and_serve_their_version(runtime: Harness) -> None:
    env = runtime.env("ready")
    runtime.ensure(env, [0, 1], runtime.revision(env, "v1", env={"DEMO_LOG_FILE": "/tmp/requests.log"}, logs={"files": ["/tmp/*.log"]}))
    instances = runtime.wait_ready(env, 2)
    assert [i.slot for i in instances] == [0, 1]
    assert len({i.address for i in instances}) == 2, "two instances must not share an address"
    assert all(i.ports == {8080: 8080} and i.phase is Phase.RUNNING for i in instances)
    assert [version_of(i.address) for i in instances] == ["v1", "v1"]
    lines = list(runtime.runtime.logs(env, instances[0].name, tail=50))
    assert any("GET /version" in line for line in lines), lines
    assert lines[-1][:4].isdigit(), "each log line starts with a timestamp"
    runtime.wait(env, lambda _: any("/tmp/requests.log" in line and "GET /version" in line
                                    for line in runtime.runtime.logs(env, instances[0].name)), 10, "the log file collected")
    follow = runtime.runtime.logs(env, instances[1].name, follow=True, tail=0)
    threading.Timer(0.5, version_of, args=(instances[1].address,)).start()
    assert any("GET /version" in next(follow) for _ in range(40)), "following a log shows lines as they come"
    getattr(follow, "close", lambda: None)()  # a generator: closing it ends the stream
    reasons = [e.reason for e in runtime.runtime.events(env, instance=instances[0].name)]
    assert reasons[:1] == ["Scheduled"] and "Started" in reasons


def test_ensure_twice_equals_once_and_a_new_revision_replaces(runtime: Harness) -> None:
    env = runtime.env("idem")
    v1 = runtime.revision(env, "v1")
    runtime.ensure(env, [0, 1], v1)
    first = runtime.wait_ready(env, 2)
    runtime.ensure(env, [0, 1], v1)
    again = runtime.runtime.observe(env)
    assert [(i.name, i.started_at, i.revision) for i in again] == [(i.name, i.started_at, i.revision) for i in first]
    assert len([e for e in runtime.runtime.events(env) if e.reason == "Scheduled"]) == 2

    v2 = runtime.revision(env, "v2")
    runtime.ensure(env, [0], v2)
    after = runtime.wait(env, lambda i: i[0].revision == v2.digest and i[0].ready, 30, "slot 0 on v2")
    assert version_of(after[0].address) == "v2"
    assert after[1].revision == v1.digest and after[1].started_at == first[1].started_at, "slot 1 was not asked to change"
    runtime.wait_event(env, lambda e: e.reason == "Stopped" and e.instance == first[0].name, 30, "the replaced slot 0 stopped")

    runtime.runtime.terminate(env, [0, 1])
    assert runtime.runtime.observe(env) == []
    runtime.runtime.terminate(env, [0, 1])  # idempotent


def test_a_replacement_starts_while_the_replaced_instance_is_still_stopping(runtime: Harness) -> None:
    """As a Deployment creates a pod while the old one terminates: a slow PreStop (or drain) of the
    old instance does not hold the batch back, and reads show only the slot's new instance."""
    env = runtime.env("overlap")
    slow_stop = {"pre_stop": {"exec": {"command": ["sleep", "6"]}}, "termination_grace_period_s": 20}
    v1 = runtime.revision(env, "v1", lifecycle=slow_stop)
    runtime.ensure(env, [0], v1)
    old = runtime.wait_ready(env, 1)[0]
    v2 = runtime.revision(env, "v2", lifecycle=slow_stop)
    runtime.ensure(env, [0], v2)
    new = runtime.wait(env, lambda i: len(i) == 1 and i[0].revision == v2.digest and i[0].ready, 30, "slot 0 on v2")[0]
    stopped = [e for e in runtime.runtime.events(env) if e.reason == "Stopped" and e.instance == old.name]
    assert not stopped, "the new instance was ready only after the old one had stopped: the replacement waited"
    assert version_of(new.address) == "v2"
    runtime.wait_event(env, lambda e: e.reason == "Stopped" and e.instance == old.name, 30, "the old instance stopped")
    assert [i.revision for i in runtime.runtime.observe(env)] == [v2.digest]
    runtime.runtime.terminate(env, [0])
    assert runtime.runtime.observe(env) == []


def test_code_package_is_unpacked_into_the_deploy_root(runtime: Harness) -> None:
    env = runtime.env("pkg")
    app = Path(__file__).resolve().parents[2] / "examples" / "demo-app" / "app.py"
    with tempfile.TemporaryDirectory() as src:
        (Path(src) / "app.py").write_text(app.read_text())
        (Path(src) / "VERSION").write_text("pkg-1.0\n")
        record = packages.add(env.app, "1.0", packages.pack_bytes(Path(src)), {"dir": src})
    revision = runtime.revision(env, "1.0", deploy_type="code-package", package_digest=record.digest,
                                image="cairn/python:3.11", deploy_root="/acs/code")
    runtime.ensure(env, [0, 1], revision)
    instances = runtime.wait_ready(env, 2)
    assert version_of(instances[0].address) == "pkg-1.0"
    result = runtime.runtime.exec(env, instances[0].name, ["sh", "-c", "pwd; ls /acs/code"], user="tester")
    assert result.stdout.split() == ["/acs/code", "VERSION", "app.py"]
    assert any(e.reason == "Unpacked" for e in runtime.runtime.events(env))
