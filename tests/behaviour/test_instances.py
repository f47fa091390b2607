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


def test_a_predecessor_left_behind_by_a_cut_short_replacement_goes_at_the_next_ensure(runtime: Harness) -> None:
    """Kubernetes replaces a pod by taking it out of the Service, creating its replacement, then
    deleting it after the drain: a process that ends in between leaves the old pod running, out of
    the Service. The environment's next ensure, of any batch, deletes it."""
    if runtime.kind != "kubernetes":
        pytest.skip("kubernetes-only: the local agent keeps its replacements in its own state (runtimes/local/state.py)")
    import time

    from cairn.runtimes.kubernetes import manifests as m

    env = runtime.env("stray")
    runtime.ensure(env, [0, 1], runtime.revision(env, "v1"))
    runtime.wait_ready(env, 2)
    api = runtime.runtime.api  # type: ignore[attr-defined]
    v2 = runtime.revision(env, "v2")
    # What the process left: slot 0's v1 pod out of the Service and its v2 replacement beside it.
    [old] = api.pods(env.app, env.environment, slots=[0])
    api.label(old["metadata"]["name"], {m.SERVING: "false"})
    api.create_pod(m.pod(v2, 0, api.namespace, defaults=api.pod_defaults()))
    shown = runtime.wait(env, lambda i: len(i) == 2 and i[0].revision == v2.digest, 30, "slot 0 shown as its replacement")
    assert shown[1].revision != v2.digest

    runtime.ensure(env, [1], v2)  # another batch
    deadline = time.monotonic() + 30
    while old["metadata"]["uid"] in {p["metadata"]["uid"] for p in api.pods(env.app, env.environment)} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert old["metadata"]["uid"] not in {p["metadata"]["uid"] for p in api.pods(env.app, env.environment)}, "the stray was not deleted"
    ready = runtime.wait_ready(env, 2)
    assert [i.revision for i in ready] == [v2.digest, v2.digest]


def test_observe_answers_from_a_watch_that_shows_others_changes_and_this_process_writes(runtime: Harness) -> None:
    """The kubernetes runtime reads pods from a watch it keeps per environment (informer.py):
    what someone else does shows up, and what this process just did is never missing."""
    if runtime.kind != "kubernetes":
        pytest.skip("kubernetes-only: the local agent answers from its own state")
    env = runtime.env("watch")
    v1 = runtime.revision(env, "v1")
    runtime.ensure(env, [0, 1], v1)
    runtime.wait_ready(env, 2)
    rt = runtime.runtime
    api = rt.api  # type: ignore[attr-defined]

    [theirs] = api.pods(env.app, env.environment, slots=[1])
    api.delete("Pod", theirs["metadata"]["name"], grace_s=0)  # someone else, e.g. kubectl delete
    runtime.wait(env, lambda i: [x.slot for x in i] == [0], 30, "slot 1's pod gone, as the API says")

    v2 = runtime.revision(env, "v2")
    for _ in range(3):  # read-your-writes: each replacement is in the very next observation
        runtime.ensure(env, [0, 1], v2 if _ % 2 == 0 else v1)
        wanted = (v2 if _ % 2 == 0 else v1).digest
        assert [i.revision for i in rt.observe(env)] == [wanted, wanted]
    assert rt.caches.of(env.app, env.environment).running, "the observations came from the watch, not from lists"  # type: ignore[attr-defined]
