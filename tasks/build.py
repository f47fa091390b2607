"""A build's side effects, one task each: clone a ref, run the build command, pack and store.

The build runs with a minimal environment (PATH, HOME inside the workspace, LANG,
SOURCE_DATE_EPOCH and the source's configured env/secret_env): nothing of the worker's own
environment (API keys, tokens) reaches a build script. Secret values are read inside the task,
never passed as parameters (Prefect records those), and are masked in every log and message.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from cairn import packages
from cairn.blocks import store
from cairn.config import SourceSpec
from cairn.errors import NotFound, PermanentError
from cairn.redaction import redact

LOG_LIMIT = 64 * 1024


def minimal_env(workspace: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    home = workspace / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8", **(extra or {})}


def public_repo(repo: str) -> str:
    """The repository URL without credentials, fit for artifacts and package records."""
    return re.sub(r"^([a-z]+://)[^/@]*@", r"\1", repo)


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _log_tail(text: str) -> str:
    return f"; last lines of its log:\n{tail(text)}" if text.strip() else "; it printed nothing"


def _git(workspace: Path, *args: str, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    # No prompts and no user or system git config: a build must not depend on who runs the worker.
    env = minimal_env(workspace, {"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"})
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PermanentError(f"git {args[0]} did not finish within {timeout_s:.0f}s", hint="check the repository is reachable") from None


@task(name="clone", task_run_name="clone {ref}", cache_policy=NO_CACHE)
def clone(repo: str, ref: str, workspace: str) -> dict[str, Any]:
    """Check ``ref`` out into a fresh ``workspace/src``; its commit and commit time."""
    ws = Path(workspace)
    src = ws / "src"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    _git(ws, "init", "-q", cwd=src)
    # Fetch only the one ref, shallow: a branch, a tag or a full commit id all work this way.
    fetched = _git(ws, "fetch", "-q", "--depth", "1", "--no-tags", "--", repo, ref, cwd=src)
    if fetched.returncode != 0:
        err = fetched.stderr.strip()
        if "couldn't find remote ref" in err or "not our ref" in err:
            raise NotFound(f"ref {ref!r} does not exist in {public_repo(repo)}",
                           hint="push it, or name an existing branch, tag or full commit id")
        if "does not appear to be a git repository" in err or "not found" in err.lower():
            raise NotFound(f"no git repository at {public_repo(repo)}", hint="fix source.repo and apply the configuration again")
        raise PermanentError(f"git fetch of {ref!r} from {public_repo(repo)} failed: {tail(err, 3)}", hint="check the repository URL and access")
    _git(ws, "checkout", "-q", "--detach", "FETCH_HEAD", cwd=src).check_returncode()
    commit, committed_at = _git(ws, "log", "-1", "--format=%H %ct", cwd=src).stdout.split()
    return {"commit": commit, "committed_at": int(committed_at)}


@task(name="run-build", cache_policy=NO_CACHE)
def run_build(workspace: str, source: SourceSpec, committed_at: int) -> dict[str, str]:
    """Run the build command in the checkout under its timeout; the (masked) log and the output dir."""
    ws = Path(workspace)
    src = ws / "src"
    secrets = {var: store.get_secret(name) for var, name in source.secret_env.items()}
    # SOURCE_DATE_EPOCH: tools that stamp times (zip, sphinx, gcc) use the commit's, so equal inputs give equal bytes.
    env = minimal_env(ws, {"SOURCE_DATE_EPOCH": str(committed_at), **source.env, **secrets})
    log_path = ws / "build.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(["sh", "-c", source.build_command], cwd=src, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=source.timeout_s)
        except subprocess.TimeoutExpired:
            # The command may have started children: stop its whole process group.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
    text = redact(log_path.read_bytes()[-LOG_LIMIT:].decode(errors="replace"), secrets.values())
    if code is None:
        raise PermanentError(f"the build ran over its timeout of {source.timeout_s:g}s and was stopped{_log_tail(text)}",
                             hint="make the build faster or raise source.timeout_s")
    if code != 0:
        raise PermanentError(f"the build command exited {code}{_log_tail(text)}", hint="fix the build command")
    output = (src / source.output_dir).resolve()
    # A symlinked output dir could point anywhere on the worker: only the checkout may be packed.
    if not output.is_dir() or not output.is_relative_to(src.resolve()):
        raise PermanentError(f"the build produced no directory {source.output_dir!r} inside the checkout",
                             hint="make the build command write its output there, or fix source.output_dir")
    return {"log": text, "output": str(output)}


@task(name="pack-and-store", task_run_name="pack {version}")
def pack_and_store(app: str, version: str, output: str, origin: dict[str, str]) -> dict[str, Any]:
    """Pack the output reproducibly and store it; the same bytes again are a no-op."""
    return asdict(packages.add(app, version, packages.pack_bytes(Path(output)), origin))


def report_markdown(record: dict[str, Any], log: str) -> str:
    source = record["source"]
    rows = [("app", record["app"]), ("version", record["version"]), ("digest", f"sha256:{record['digest']}"),
            ("commit", source["commit"]), ("ref", source["ref"]), ("repository", source["repo"]), ("size", f"{record['size']} bytes")]
    table = "\n".join(f"| {k} | `{v}` |" for k, v in rows)
    fence = "````"  # a build log may itself contain ``` lines
    return f"# Build {record['app']} {record['version']}\n\n| | |\n|---|---|\n{table}\n\n## Build log\n\n{fence}text\n{log}\n{fence}\n"
