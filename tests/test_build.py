"""`cairn build` on the platform (server, worker, local agent) from git repositories made here (issue 10), and the
build's container (issue 18): what a build command can see and hold, its limits, and its git credentials."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn import packages
from cairn.plan import PauseMode
from cairn.status import Status
from tests.behaviour.test_isolation import HOST_ENVIRON, OTHER_PIDS, Probe  # a command for sh and its verdict: refused, or prints:<text>

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

# The build image has no git: a detached checkout names its commit in .git/HEAD.
BUILD = "mkdir -p dist && cp app.py dist/ && cat .git/HEAD > dist/VERSION"
DEMO_APP = Path(__file__).resolve().parents[1] / "examples" / "demo-app" / "app.py"


def git_repo(root: Path) -> tuple[Path, str]:
    repo = root / "shop-src"
    repo.mkdir()
    (repo / "app.py").write_bytes(DEMO_APP.read_bytes())
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q", "-b", "main"], ["add", "app.py"], ["commit", "-qm", "demo app"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo, subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def register(repo: Path, app: str | None = None, url: str | None = None, **source: Any) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = app or f"bld-{uuid.uuid4().hex[:8]}"
    env = {"image": "cairn/python:3.11", "instances": 2, "cpu": 0.2, "memory_mb": 96, "deploy_root": "/acs/code",
           "ports": [{"container_port": 8080}],
           "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 12},
           "lifecycle": {"termination_grace_period_s": 2}}
    spec = {"repo": url or f"file://{repo}", "ref": "main", "build_command": BUILD, "output_dir": "dist", "timeout_s": 60, **source}
    store.apply(load_data({
        "clusters": [{"name": "bld-a"}, {"name": "bld-b"}],
        "apps": [{"name": app, "deploy_type": "code-package", "source": spec,
                  "environments": {"production": {**env, "cluster": "bld-a"}, "test": {**env, "cluster": "bld-b"}}}],
    }))
    return app


def served_versions(app: str, env: str) -> list[str]:
    from cairn.tasks.context import env_target

    t = env_target(app, env)
    return [httpx.get(f"http://{i.address}:8080/version", timeout=5).text.strip() for i in t.runtime.observe(t.env) if i.ready]


def test_build_twice_same_digest_then_ship_to_test(platform: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from cairn.orders import actions

    repo, commit = git_repo(tmp_path)
    app = register(repo)
    first = cli("build", app, "--ref", "main", "--json")
    assert first.returncode == 0, first.stderr
    second = cli("build", app, "--ref", "main", "--release", "test", "--pause-mode", "none", "--json")
    assert second.returncode == 0, second.stderr
    built, again = json.loads(first.stdout), json.loads(second.stdout)
    assert built["order"] is None and again["order"]["id"]
    assert built["build"]["digest"] == again["build"]["digest"], "equal inputs, equal digest"
    assert built["build"]["version"] == f"main-{commit[:12]}"
    assert built["build"]["source"] == {"repo": f"file://{repo}", "ref": "main", "commit": commit}

    done = actions.wait_for(again["order"]["id"], {Status.COMPLETED, Status.FAILED}, timeout_s=300)
    assert done["status"] == "completed", done["message"]
    assert served_versions(app, "test") == [commit, commit]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifact = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"build-{app}"])), limit=1)[0]
    assert commit in artifact.data and built["build"]["digest"] in artifact.data and "Build log" in artifact.data

    listed = cli("package", "list", app, "--json")
    assert [r["digest"] for r in json.loads(listed.stdout)] == [built["build"]["digest"]]

    # An altered archive is never shipped: the order fails before any instance starts.
    packages.blob_path(built["build"]["digest"]).write_bytes(b"not the package")
    order = actions.create_order(app, "production", built["build"]["digest"][:12], 1, PauseMode.NONE)
    failed = actions.wait_for(order["id"], {Status.COMPLETED, Status.FAILED}, timeout_s=120)
    assert failed["status"] == "failed" and "does not match its digest" in failed["message"]
    assert served_versions(app, "production") == []


def test_bad_builds_fail_clearly_and_store_nothing(platform: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    repo, _ = git_repo(tmp_path)
    app = register(repo)
    missing = cli("build", app, "--ref", "no-such-branch")
    assert missing.returncode == 3 and "ref 'no-such-branch' does not exist" in missing.stderr, missing.stderr

    register(repo, app, build_command="echo compiling; exit 3")
    broken = cli("build", app)
    assert broken.returncode == 1 and "exited 3" in broken.stderr and "compiling" in broken.stderr, broken.stderr

    register(repo, app, build_command="sleep 30", timeout_s=1)
    slow = cli("build", app, "--release", "test")
    assert slow.returncode == 1 and "timeout of 1s" in slow.stderr, slow.stderr

    bad_ref = cli("build", app, "--ref=--upload-pack=x")
    assert bad_ref.returncode == 2
    assert packages.list_packages(app) == [] and not list(packages.store_dir().glob(f"records/{app}/*"))
    from cairn.orders import actions

    assert actions.list_orders(app) == [], "nothing shipped"


# --- issue 18: the build's container ---------------------------------------------------------

@dataclass(frozen=True)
class Planted:
    """What lies outside the build's container, and must stay out of its reach."""

    cairn_home: str
    marker: str  # a file under $CAIRN_HOME, holding TOKEN
    prefect_db: str
    api_auth: str
    other_workspace: str  # a file in another build's checkout, holding TOKEN
    prefect_port: int


TOKEN = f"planted-{uuid.uuid4().hex}"
PROBES = [
    Probe("$CAIRN_HOME is absent", "ls -a {cairn_home}", "refused"),
    Probe("a file under $CAIRN_HOME is unreadable", "cat {marker}", "refused"),
    Probe("the Prefect database is unreadable", "cat {prefect_db}", "refused"),
    Probe("the platform's auth strings are unreadable", "cat {api_auth}", "refused"),
    Probe("another build's workspace is unreadable", "cat {other_workspace}", "refused"),
    Probe("the workspace's parent is the container's root, not the builds directory", "ls /build/.. | grep -c '^other-'", "refused"),
    Probe("the workspace holds the checkout and the home alone", "ls -a /build | tr '\\n' ' '", "prints:. .. home src"),
    Probe("pid 1 is the build command, not the host's init", "tr '\\0' ' ' < /proc/1/cmdline | cut -d' ' -f1", "prints:sh"),
    Probe("/proc holds the build's own processes alone",
          OTHER_PIDS, "prints:"),
    Probe("no host process's environment is readable",
          HOST_ENVIRON, "prints:"),
    Probe("the Prefect API on loopback is out of reach",
          "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {prefect_port}), 3)'", "refused"),
    Probe("the network is loopback alone", "ls /sys/class/net | tr '\\n' ' '", "prints:lo"),
    Probe("the build runs as nobody", "echo $(id -u):$(id -g)", "prints:65534:65534"),
    Probe("the build holds no capability (effective, permitted, bounding)",
          "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status | cut -f2 | tr '\\n' ' '",
          "prints:0000000000000000 0000000000000000 0000000000000000"),
    Probe("no new privileges, and seccomp filters", "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | cut -f2 | tr '\\n' ' '",
          "prints:1 2"),
    Probe("the root is read-only", "touch /usr/bin/probe", "refused"),
    Probe("mount fails", "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m", "refused"),
    Probe("the memory limit is the source's memory_mb",
          "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max", f"prints:{96 << 20}"),
    Probe("the CPU quota is the source's cpu",
          "cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max", "prints:50000"),
]


def in_container(repo: Path, **source: Any) -> dict[str, str]:
    """The build's two tasks, as the flow runs them, on a workspace under $CAIRN_HOME/builds."""
    from cairn.config import SourceSpec
    from cairn.paths import cairn_home
    from cairn.tasks import build as tasks

    spec = SourceSpec(**{"repo": f"file://{repo}", "build_command": BUILD, "output_dir": "dist", "timeout_s": 60, **source})
    ws = cairn_home() / "builds" / f"box-{uuid.uuid4().hex[:8]}"
    try:
        checkout = tasks.clone.fn(spec.repo, "main", str(ws), spec.credentials_secret)
        return tasks.run_build.fn(str(ws), spec, checkout["committed_at"])
    finally:
        shutil.rmtree(ws, ignore_errors=True)


@pytest.fixture(scope="module")
def probed(prefect_server: str, oci_images: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Planted, dict[str, tuple[int, str]]]:
    """One build running every probe (a script in its repository); each probe's exit code and output."""
    from cairn.paths import cairn_home

    home = cairn_home()
    marker = home / f"probe-marker-{uuid.uuid4().hex[:8]}"
    marker.write_text(TOKEN)
    other = home / "builds" / f"other-{uuid.uuid4().hex[:8]}" / "build" / "src" / "secret.txt"
    other.parent.mkdir(parents=True)
    other.write_text(TOKEN)
    planted = Planted(str(home), str(marker), str(home / "prefect" / "prefect.db"), str(home / "api-auth"), str(other),
                      int(prefect_server.rsplit(":", 1)[1].split("/")[0]))
    assert Path(planted.prefect_db).is_file(), "the database the probe reads for must exist"
    repo, _ = git_repo(tmp_path_factory.mktemp("probes"))
    lines = ["run() { out=$(sh -c \"$2\" 2>&1); printf '@@%s %s\\n%s\\n' \"$1\" \"$?\" \"$out\"; }"]
    lines += [f"run {i} {shlex.quote(p.command.format(**vars(planted)))}" for i, p in enumerate(PROBES)]
    (repo / "probes.sh").write_text("\n".join(lines) + "\n")
    commit_all(repo)
    os.environ["CAIRN_PROBE_MARKER"] = TOKEN  # in the worker's environment: the build must not see it
    try:
        log = in_container(repo, build_command="sh probes.sh; " + BUILD, cpu=0.5, memory_mb=96)["log"]
    finally:
        os.environ.pop("CAIRN_PROBE_MARKER")
        shutil.rmtree(other.parents[2], ignore_errors=True)
        marker.unlink()
    assert TOKEN not in log, "nothing planted outside reached the build's output"
    results: dict[str, tuple[int, str]] = {}
    for part in log.split("@@")[1:]:
        head, _, out = part.partition("\n")
        index, code = head.split()
        results[PROBES[int(index)].name] = (int(code), out.strip())
    return planted, results


@pytest.mark.parametrize("probe", [pytest.param(p, id=p.name) for p in PROBES])
def test_a_build_sees_only_its_workspace(probed: tuple[Planted, dict[str, tuple[int, str]]], probe: Probe) -> None:
    _, results = probed
    code, out = results[probe.name]
    if probe.verdict == "refused":
        assert code != 0, f"{probe.name}: it succeeded, printing {out!r}"
    else:
        assert (code, out) == (0, probe.verdict.removeprefix("prints:")), probe.name


def test_a_build_over_its_memory_is_killed_and_reported(prefect_server: str, oci_images: Any, tmp_path: Path) -> None:
    from cairn.errors import PermanentError

    repo, _ = git_repo(tmp_path)
    with pytest.raises(PermanentError, match=r"ran out of memory \(limit 64 MB\) and was killed") as info:
        in_container(repo, build_command="echo allocating; python3 -c \"b = b'x' * (256 << 20)\" && " + BUILD, memory_mb=64)
    assert "allocating" in str(info.value), "the message carries the log's tail"


def test_a_build_over_its_time_is_stopped_with_all_its_processes(prefect_server: str, oci_images: Any, tmp_path: Path) -> None:
    from cairn.errors import PermanentError
    from cairn.paths import cairn_home

    repo, _ = git_repo(tmp_path)
    seconds = 30000 + uuid.uuid4().int % 10000  # a command line no other process on the machine has
    with pytest.raises(PermanentError, match="timeout of 1s") as info:
        in_container(repo, build_command=f"echo started; (sleep {seconds} &); sleep {seconds}", timeout_s=1)
    assert "started" in str(info.value)
    listed = subprocess.run(["runc", "--root", str(cairn_home() / "builds" / "runc"), "list", "-q"], capture_output=True, text=True)
    assert listed.returncode == 0 and not [c for c in listed.stdout.split() if c.startswith("build.box-")], "no build container is left"
    sleeping = [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p) == f"sleep {seconds}"]
    assert sleeping == [], "the background child died with the build"


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def commit_all(repo: Path) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["add", "-A"], ["commit", "-qm", "more"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)


def test_git_credentials_come_from_a_secret_and_leak_nowhere(platform: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    """A private repository on a real git HTTP server with Basic auth: the build clones it with the
    login of credentials_secret; a second build echoes that login (its secret_env names the same
    secret) and fails. Then everything the platform keeps is searched for the password."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from cairn.blocks import store
    from cairn.images.credentials import Credentials
    from tests.test_secret_leaks import api_texts, database_rows_holding, files_holding
    from tests.unit.test_build_tasks import GitServer

    repo, commit = git_repo(tmp_path)
    login = Credentials("builder", f"tok-{uuid.uuid4().hex}")
    secret = f"git-login-{uuid.uuid4().hex[:8]}"
    store.set_secret(secret, json.dumps({"username": login.username, "password": login.password}))
    with GitServer(tmp_path, login) as server:
        url = f"{server.url}/{repo.name}"
        app = register(repo, url=url, credentials_secret=secret)
        built = cli("build", app, "--json")
        assert built.returncode == 0, built.stderr
        assert json.loads(built.stdout)["build"]["source"]["commit"] == commit
        assert server.seen and set(server.seen) == {server.expected}, "the clone sent the login with every request"

        echo = ('echo "login $GIT_LOGIN"; echo "token $(python3 -c \'import json, os; '
                'print(json.loads(os.environ["GIT_LOGIN"])["password"])\')"; exit 4')
        register(repo, app, url=url, credentials_secret=secret, secret_env={"GIT_LOGIN": secret}, build_command=echo)
        failed = cli("build", app)
    assert failed.returncode == 1 and "exited 4" in failed.stderr and "token ***" in failed.stderr, failed.stderr
    assert login.password not in failed.stderr + failed.stdout

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"build-{app}-")))
    assert len(runs) == 2, [r.name for r in runs]
    texts = api_texts([str(r.id) for r in runs])
    assert "token ***" in "".join(texts.values()), "the searches see the failed build's log"
    home = Path(os.environ["CAIRN_HOME"])
    leaks = [where for where, text in texts.items() if login.password in text or login.basic() in text]
    leaks += [f"database {row}" for value in (login.password, login.basic()) for row in database_rows_holding(home / "prefect" / "prefect.db", value)]
    leaks += [f"file {p}" for value in (login.password, login.basic()) for p in files_holding(value.encode(), home)]
    assert not leaks, f"the credential was found in: {leaks}"
