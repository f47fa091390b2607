"""exec runs in the instance's own world; secret values reach the app and nothing else."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from cairn.errors import PermanentError
from tests.behaviour.conftest import Harness

pytestmark = pytest.mark.slow


def test_exec_sees_mounts_deploy_root_env_and_its_own_localhost(runtime: Harness, tmp_path_factory: pytest.TempPathFactory) -> None:
    env = runtime.env("exec")
    host = tmp_path_factory.mktemp("data")
    (host / "seed.txt").write_text("from-host")
    revision = runtime.revision(
        env, deploy_root="/acs/code", env={"GREETING": "hello"},
        files=[{"path": "/etc/demo/app.conf", "content": "mode=test\n"}],
        dirs=[{"path": "/var/data", "host_path": str(host)}],
    )
    runtime.ensure(env, [0, 1], revision)
    first, _ = runtime.wait_ready(env, 2)
    script = (
        "cat /etc/demo/app.conf; cat /var/data/seed.txt; echo; echo $GREETING; ls /acs/code; pwd; "
        "echo written > /var/data/out.txt; "
        "python3 -c \"import urllib.request as u; print(u.urlopen('http://localhost:8080/version').read().decode().strip())\""
    )
    result = runtime.runtime.exec(env, first.name, ["sh", "-c", script], user="alice")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split() == ["mode=test", "from-host", "hello", "app.py", "/acs/code", "v1"]
    assert (host / "out.txt").read_text() == "written\n", "a directory mount writes through to the host"
    events = [e for e in runtime.runtime.events(env) if e.reason == "Exec"]
    assert events and "alice" in events[-1].message and "cat /etc/demo/app.conf" in events[-1].message
    failing = runtime.runtime.exec(env, first.name, ["sh", "-c", "exit 4"], user="alice")
    assert failing.exit_code == 4
    slow = runtime.runtime.exec(env, first.name, ["sleep", "10"], user="alice", timeout_s=0.5)
    assert slow.exit_code != 0
    code = runtime.runtime.shell(env, first.name, user="carol", command=("sh", "-c", 'test "$(pwd)$GREETING" = /acs/codehello && exit 3'))
    assert code == 3, "the shell runs in the instance's cwd and environment"
    assert any(e.reason == "Shell" and "carol" in e.message for e in runtime.runtime.events(env))


def test_a_secret_value_never_appears_in_logs_events_state_or_errors(runtime: Harness) -> None:
    env = runtime.env("secret")
    value = f"s3cr3t-{uuid.uuid4().hex}"
    revision = runtime.revision(env, secret_env={"DB_PASSWORD": "shop-db-password"})
    runtime.ensure(env, [0, 1], revision, secrets={"DB_PASSWORD": value})
    first, _ = runtime.wait_ready(env, 2)
    seen = runtime.runtime.exec(env, first.name, ["sh", "-c", f'test "$DB_PASSWORD" = "{value}" && echo same'], user="bob")
    assert seen.stdout.strip() == "same", "the app's environment holds the secret value"
    with pytest.raises(PermanentError) as caught:
        runtime.ensure(env, [2], runtime.revision(env, image="cairn/missing:v1", secret_env={"DB_PASSWORD": "shop-db-password"}),
                       secrets={"DB_PASSWORD": value})
    texts = [str(caught.value)]
    texts += [f"{e.reason} {e.message}" for e in runtime.runtime.events(env)]
    texts += [line for i in runtime.runtime.observe(env) for line in runtime.runtime.logs(env, i.name)]
    texts += [str(i.to_dict()) for i in runtime.runtime.observe(env)]
    assert not [t for t in texts if value in t]
    leaked = []
    for path in runtime.state_files():
        try:
            if value.encode() in path.read_bytes():
                leaked.append(path)
        except OSError:
            continue
    assert not leaked, f"secret value found in {leaked}"
    assert runtime.state_files(), "the search must have looked at something"


def test_a_secret_the_app_prints_is_masked_in_its_log(runtime: Harness) -> None:
    env = runtime.env("mask")
    value = f"pw-{uuid.uuid4().hex}"
    runtime.ensure(env, [0, 1], runtime.revision(env, secret_env={"DB_PASSWORD": "shop-db-password"}), secrets={"DB_PASSWORD": value})
    first, _ = runtime.wait_ready(env, 2)
    # Written to the app's own stdout (pid 1's), as an app that logs its configuration would.
    printed = runtime.runtime.exec(env, first.name, ["sh", "-c", 'echo "connecting with password=$DB_PASSWORD" > /proc/1/fd/1'], user="bob")
    assert printed.exit_code == 0, printed.stderr
    runtime.wait(env, lambda _: any("connecting with" in line for line in runtime.runtime.logs(env, first.name)), 10,
                         "the printed line in the log")
    logged = [line for line in runtime.runtime.logs(env, first.name) if "connecting with" in line]
    assert logged and all(line.endswith("stdout connecting with password=***") for line in logged), logged
    assert not [p for p in runtime.state_files() if value.encode() in _bytes(p)], "nor in any file the runtime keeps"


def test_the_app_runs_as_the_configured_user(runtime: Harness) -> None:
    env = runtime.env("runas")
    runtime.ensure(env, [0, 1], runtime.revision(env, user={"uid": 1000, "gid": 1001}))
    first, _ = runtime.wait_ready(env, 2)
    seen = runtime.runtime.exec(env, first.name, ["sh", "-c", "id -u; id -g; stat -c %u /proc/1"], user="bob")
    assert seen.stdout.split() == ["1000", "1001", "1000"], seen


def _bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # a network namespace's pin, a socket: nothing to read
        return b""
