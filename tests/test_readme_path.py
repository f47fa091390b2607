"""The README's "Using it" path, as a new user runs it: `cairn` commands in a fresh shell.

Each command is a subprocess with the environment of a new login and nothing else: PATH (with
the installed `cairn`), HOME and CAIRN_HOME in temporary directories, and no Prefect variable at
all. So every command must find the platform `cairn up` started from $CAIRN_HOME alone, and no
Prefect client may fall back to an ephemeral server in ~/.prefect. This test starts its own
platform (its own CAIRN_HOME, one `cairn up`), never the session's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cairn.procs import ProcessRef

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.prefect, pytest.mark.slow]
SECRET = "readme-path-secret-value"


@dataclass
class Shell:
    """A new user's shell: `cairn ...` with only PATH, HOME and CAIRN_HOME set."""

    home: Path
    cairn_home: Path

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(self.home), "CAIRN_HOME": str(self.cairn_home)}

    def cairn(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["cairn", *args], input=input, capture_output=True, text=True, env=self.env, cwd=ROOT, timeout=300)
        # Whatever the outcome, a user never sees a traceback or a telemetry/analytics complaint.
        for stream in (proc.stdout, proc.stderr):
            assert "Traceback" not in stream and "telemetry" not in stream.lower() and "analytics" not in stream.lower(), (
                f"cairn {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def ok(self, *args: str, input: str | None = None) -> str:
        proc = self.cairn(*args, input=input)
        assert proc.returncode == 0, f"cairn {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    sh = Shell(tmp_path / "home", tmp_path / "cairn")
    sh.home.mkdir()
    yield sh
    if (sh.cairn_home / "platform.json").exists():
        sh.cairn("down")  # stops what a failed test left running (never --purge: the bridge is shared)


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _no_platform_line(proc: subprocess.CompletedProcess[str]) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "`cairn up`" in lines[0], (proc.returncode, proc.stdout, proc.stderr)


def _private_modes(cairn_home: Path, agent_socket: Path) -> None:
    """What `cairn up` created is its user's alone: the homes 0700, the auth string and the
    sockets of the root agent and the warm start server 0600."""
    import stat

    from tests.test_webhook import wait_until

    warm = cairn_home / "warm.sock"
    wait_until("the warm start server's socket", warm.exists, timeout_s=120)  # it binds once its imports are done
    wanted = {cairn_home: 0o700, cairn_home / "prefect": 0o700, cairn_home / "api-auth": 0o600, warm: 0o600, agent_socket: 0o600}
    modes = {str(path): oct(stat.S_IMODE(path.stat().st_mode)) for path in wanted}
    assert modes == {str(path): oct(mode) for path, mode in wanted.items()}


def test_the_using_it_commands_work_in_a_new_shell(shell: Shell, tmp_path: Path) -> None:
    up = json.loads(shell.ok("up", "--json"))
    api = up["server"]
    state = json.loads((shell.cairn_home / "platform.json").read_text())
    assert state["server"]["url"] == api and httpx.get(f"{api}/health", timeout=5).status_code == 200
    processes = {name: ProcessRef.from_record(state[name]) for name in ("server", "worker", "warm")}
    assert all(ref and ref.alive() for ref in processes.values()), state
    for name, ref in processes.items():  # every process of the platform: its own Prefect home, no telemetry
        environ = _environ(ref.pid)  # type: ignore[union-attr]
        assert environ["PREFECT_HOME"] == str(shell.cairn_home / "prefect"), name
        assert environ["DO_NOT_TRACK"] == "1" and environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false", name
        assert environ["PREFECT_SERVER_EPHEMERAL_ENABLED"] == "false", name

    src = tmp_path / "build"
    src.mkdir()
    (src / "app.py").write_text("print('shop')\n")
    added = json.loads(shell.ok("package", "add", "shop-api", "v2", str(src), "--json"))
    listed = json.loads(shell.ok("package", "list", "shop-api", "--json"))
    assert [(p["version"], p["digest"]) for p in listed] == [("v2", added["digest"])]

    # The API requires the generated auth string on loopback too; cairn's own commands send it.
    user, password = (shell.cairn_home / "api-auth").read_text().strip().split(":", 1)
    assert httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code == 401
    login = (user, password)
    _private_modes(shell.cairn_home, Path(up["agent"]["socket"]))

    out = shell.ok("secret", "set", "shop-db-password", input=SECRET + "\n")
    assert SECRET not in out
    # Stored in the platform `cairn up` started (asked of its API directly), not anywhere else.
    stored = httpx.get(f"{api}/block_types/slug/secret/block_documents/name/shop-db-password",
                       params={"include_secrets": "true"}, auth=login, timeout=10)
    assert stored.status_code == 200 and stored.json()["data"]["value"] == SECRET

    shell.ok("apply", "-f", "examples/shop.yaml")
    apps = json.loads(shell.ok("app", "list", "--json"))
    assert [(a["name"], a["environments"]) for a in apps] == [("shop-api", ["production", "test"])]
    env = json.loads(shell.ok("env", "show", "shop-api", "production", "--json"))
    assert env["spec"]["instances"] == 4 and env["spec"]["secret_env"] == {"DB_PASSWORD": "shop-db-password"}
    assert SECRET not in json.dumps(env)

    plan = json.loads(shell.ok("release", "create", "shop-api", "production", "--version", "v2", "--batches", "2",
                               "--pause-mode", "first_batch", "--dry-run", "--json"))
    assert [b["size"] for b in plan["batches"]] == [2, 2]
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 10}, auth=login, timeout=10)
    assert runs.status_code == 200 and runs.json() == [], "a dry run created a flow run"

    status = json.loads(shell.ok("status", "--json"))
    assert status["server"]["url"] == api and status["server"]["healthy"]
    assert status["worker"]["running"] and status["warm_start"]["running"] and status["agent"]["running"]

    shell.ok("down")
    assert not any(ref.alive() for ref in processes.values() if ref)
    status = json.loads(shell.ok("status", "--json"))
    assert not status["server"]["healthy"] and not status["worker"]["running"] and not status["agent"]["running"]
    _no_platform_line(shell.cairn("app", "list"))
    assert not (shell.home / ".prefect").exists(), "a Prefect client wrote to the user's own Prefect home"


def test_with_no_platform_up_a_command_says_so_in_one_line(shell: Shell) -> None:
    for args in (("app", "list"), ("build", "shop-api", "--ref", "main"), ("release", "list")):
        _no_platform_line(shell.cairn(*args))
    proc = shell.cairn("env", "show", "shop-api", "production", "--json")
    assert proc.returncode == 1 and "`cairn up`" in json.loads(proc.stdout)["message"], proc.stdout
    assert shell.ok("package", "list", "shop-api", "--json") == "[]\n"  # needs no platform, works without one
    assert not (shell.home / ".prefect").exists()
