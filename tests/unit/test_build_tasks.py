"""The build's tasks without a server (``.fn``): clone, run the build, pack and store, on a git repository made here."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from cairn import packages
from cairn.config import SourceSpec
from cairn.errors import ConfigError, NotFound, PermanentError
from cairn.redaction import MASK
from cairn.tasks import build as tasks

BUILD = "mkdir -p dist && cp app.py dist/ && git rev-parse HEAD > dist/VERSION"


def git_repo(root: Path) -> Path:
    repo = root / "repo"
    repo.mkdir()
    (repo / "app.py").write_text("print('hi')\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q", "-b", "main"], ["add", "app.py"], ["commit", "-qm", "first"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CAIRN_BUILD_TEST_LEAK", "host-only")
    monkeypatch.setattr(tasks.store, "get_secret", lambda name: {"npm-token": "s3cr3t-value"}[name])
    return tmp_path


def build(root: Path, repo: Path, ref: str = "main", **source: object) -> dict:
    spec = SourceSpec(repo=f"file://{repo}", ref=ref, **{"build_command": BUILD, "output_dir": "dist", **source})  # type: ignore[arg-type]
    ws = root / f"ws-{len(list(root.glob('ws-*')))}"
    checkout = tasks.clone.fn(spec.repo, ref, str(ws))
    built = tasks.run_build.fn(str(ws), spec, checkout["committed_at"])
    version = packages.build_version(ref, checkout["commit"])
    return {**tasks.pack_and_store.fn("shop", version, built["output"], {"commit": checkout["commit"]}), "log": built["log"]}


def test_equal_inputs_give_the_same_digest_and_the_env_is_minimal(home: Path) -> None:
    repo = git_repo(home)
    env_dump = BUILD + " && env | sort && echo token=$NPM_TOKEN"
    first = build(home, repo, build_command=env_dump, env={"CI": "1"}, secret_env={"NPM_TOKEN": "npm-token"})
    again = build(home, repo, build_command=env_dump, env={"CI": "1"}, secret_env={"NPM_TOKEN": "npm-token"})
    assert first["digest"] == again["digest"] and first["version"] == again["version"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert first["version"] == f"main-{commit[:12]}"
    assert "CI=1" in first["log"] and "LANG=C.UTF-8" in first["log"] and "CAIRN_BUILD_TEST_LEAK" not in first["log"]
    assert "s3cr3t-value" not in first["log"] and f"token={MASK}" in first["log"]
    assert len(packages.list_packages("shop")) == 1


def _refused(home: Path, repo: Path, error: type[Exception], match: str, **kw: object) -> None:
    before = sorted(packages.store_dir().rglob("*")) if packages.store_dir().exists() else []
    with pytest.raises(error, match=match) as info:
        build(home, repo, **kw)  # type: ignore[arg-type]
    after = sorted(packages.store_dir().rglob("*")) if packages.store_dir().exists() else []
    assert after == before, "nothing stored"
    assert "s3cr3t-value" not in str(info.value)


def test_bad_builds_are_refused_and_store_nothing(home: Path) -> None:
    repo = git_repo(home)
    _refused(home, repo, NotFound, "ref 'nope' does not exist", ref="nope")
    _refused(home, repo, PermanentError, "exited 3", build_command="echo $NPM_TOKEN; echo broken; exit 3",
             secret_env={"NPM_TOKEN": "npm-token"})
    _refused(home, repo, PermanentError, "timeout of 0.5s", build_command="echo slow; sleep 30", timeout_s=0.5)
    _refused(home, repo, PermanentError, "no directory 'dist'", build_command="ln -s / dist")
    _refused(home, repo, ConfigError, "symlinks must stay inside", build_command="mkdir dist && ln -s /etc dist/etc")
    with pytest.raises(NotFound, match="no git repository"):
        tasks.clone.fn(f"file://{home}/missing", "main", str(home / "ws-x"))
