"""Issue 10 end to end: `cairn build` on the platform (server, worker, local agent) from a git repository made here."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn import packages
from cairn.plan import PauseMode
from cairn.status import Status

pytestmark = [pytest.mark.prefect, pytest.mark.slow]

BUILD = "mkdir -p dist && cp app.py dist/ && git rev-parse HEAD > dist/VERSION"
DEMO_APP = Path(__file__).resolve().parents[1] / "examples" / "demo-app" / "app.py"


def git_repo(root: Path) -> tuple[Path, str]:
    repo = root / "shop-src"
    repo.mkdir()
    (repo / "app.py").write_bytes(DEMO_APP.read_bytes())
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q", "-b", "main"], ["add", "app.py"], ["commit", "-qm", "demo app"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo, subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def register(repo: Path, app: str | None = None, **source: Any) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = app or f"bld-{uuid.uuid4().hex[:8]}"
    env = {"image": "cairn/python:3.11", "instances": 2, "cpu": 0.2, "memory_mb": 96, "deploy_root": "/acs/code",
           "ports": [{"container_port": 8080}],
           "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 12},
           "lifecycle": {"termination_grace_period_s": 2}}
    spec = {"repo": f"file://{repo}", "ref": "main", "build_command": BUILD, "output_dir": "dist", "timeout_s": 60, **source}
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
