"""A build's side effects, one task each: clone a ref, run the build command, pack and store.

The clone runs on the worker (it needs the git credentials); the build command runs in a
container (``cairn.runtimes.local.sandbox``) whose only host directory is the workspace's
``build/``: the checkout (``src``) and a home. Workspace layout, under ``$CAIRN_HOME/builds``:

    <app>-<run>/build/src     the checkout, the build's working directory (/build/src inside)
    <app>-<run>/build/home    the build's HOME (/build/home)
    <app>-<run>/git-home      git's HOME on the worker: no user config of whoever runs it
    <app>-<run>/container     the container's bundle and throwaway root (never mounted)

The build's environment is the image's, HOME, LANG, SOURCE_DATE_EPOCH and the source's env
and secret_env: nothing of the worker's own environment reaches it. Secret values and the git
credential are read inside the tasks, never passed as parameters (Prefect records those), and
are masked in every log and message.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from cairn import packages
from cairn.blocks import store
from cairn.config import SourceSpec, public_repo
from cairn.errors import NotFound, PermanentError
from cairn.images.credentials import Credentials
from cairn.images.defaults import qualify
from cairn.images.store import ImageStore, resolve
from cairn.paths import cairn_home
from cairn.redaction import redact
from cairn.runtimes.local import binaries, cgroups, sandbox
from cairn.runtimes.local.container import Container
from cairn.runtimes.local.runc import Runc, container_id
from cairn.runtimes.local.state import default_state_dir
from cairn.tasks.context import pull_login

LOG_LIMIT = 64 * 1024
GIT_TIMEOUT_S = 300.0


def checkout_dir(workspace: Path) -> Path:
    return workspace / "build" / "src"


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _log_tail(text: str) -> str:
    return f"; last lines of its log:\n{tail(text)}" if text.strip() else "; it printed nothing"


def credentials(secret: str | None) -> Credentials | None:
    """The git login of ``source.credentials_secret``, read now, never stored."""
    return None if secret is None else Credentials(*pull_login(secret, field="source.credentials_secret"))


def masks(credential: Credentials | None) -> list[str]:
    """Every spelling of a credential a message could carry: the password, user:password, Basic."""
    if credential is None:
        return []
    return [credential.password, f"{credential.username}:{credential.password}", credential.basic()]


def git_env(workspace: Path, repo: str, credential: Credentials | None) -> dict[str, str]:
    """git's environment: no prompts, no system or user config, and the credential (if any) as an
    Authorization header for ``repo``'s URL only, so a redirect elsewhere never carries it. The
    environment is readable by root and the process itself alone; argv is readable by everyone."""
    home = workspace / "git-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
    if credential is not None:
        env.update({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"http.{repo}.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {credential.basic()}"})
    return env


def fetch_argv(repo: str, ref: str) -> list[str]:
    # Only the one ref, shallow: a branch, a tag or a full commit id all work this way.
    return ["git", "fetch", "-q", "--depth", "1", "--no-tags", "--", repo, ref]


def _git(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise PermanentError(f"{argv[0]} {argv[1]} did not finish within {GIT_TIMEOUT_S:.0f}s", hint="check the repository is reachable") from None


def checkout(repo: str, ref: str, workspace: Path, credential: Credentials | None = None) -> dict[str, Any]:
    """Check ``ref`` out into a fresh checkout dir of ``workspace``; its commit and commit time."""
    src = checkout_dir(workspace)
    workspace.mkdir(mode=0o700, parents=True, exist_ok=True)  # the clone is root's until the build owns build/
    if src.exists():
        raise PermanentError(f"the workspace {workspace} is in use", hint="run the build again (a new run has a new workspace)")
    src.mkdir(parents=True)
    plain, authed = git_env(workspace, repo, None), git_env(workspace, repo, credential)
    _git(["git", "init", "-q"], src, plain).check_returncode()
    fetched = _git(fetch_argv(repo, ref), src, authed)
    if fetched.returncode != 0:
        err = redact(fetched.stderr.strip(), masks(credential))
        where = public_repo(repo)
        if "couldn't find remote ref" in err or "not our ref" in err:
            raise NotFound(f"ref {ref!r} does not exist in {where}", hint="push it, or name an existing branch, tag or full commit id")
        if re.search(r"\b(401|403)\b|Authentication failed|could not read Username", err):
            raise PermanentError(f"{where} refused the credentials{' of source.credentials_secret' if credential else ''}: {tail(err, 3)}",
                                 hint="put a valid login in the secret source.credentials_secret names" if credential
                                 else "name a secret holding a login in source.credentials_secret")
        if "does not appear to be a git repository" in err or "not found" in err.lower():
            raise NotFound(f"no git repository at {where}", hint="fix source.repo and apply the configuration again")
        raise PermanentError(f"git fetch of {ref!r} from {where} failed: {tail(err, 3)}", hint="check the repository URL and access")
    _git(["git", "checkout", "-q", "--detach", "FETCH_HEAD"], src, plain).check_returncode()
    commit, committed_at = _git(["git", "log", "-1", "--format=%H %ct"], src, plain).stdout.split()
    return {"commit": commit, "committed_at": int(committed_at)}


@task(name="clone", task_run_name="clone {ref}", cache_policy=NO_CACHE)
def clone(repo: str, ref: str, workspace: str, credentials_secret: str | None = None) -> dict[str, Any]:
    """Check ``ref`` out into ``workspace``; the credential is read here from its secret's name."""
    return checkout(repo, ref, Path(workspace), credentials(credentials_secret))


def _image(source: SourceSpec) -> tuple[str, Path, dict[str, str]]:
    """The build image pinned, pulled into the local agent's store and unpacked; its environment."""
    ref = qualify(source.image, "source.image")
    pinned = ref if ref.digest else ref.at(resolve(ref))
    images = ImageStore(default_state_dir() / "images")
    images.pull(pinned)
    rootfs = images.unpack(str(pinned.digest))
    process = json.loads((rootfs.parent / "config.json").read_text())["process"]
    env = dict(item.split("=", 1) for item in process.get("env", []) if "=" in item)
    env.pop("TERM", None)  # umoci's default for a terminal; a build has none
    return str(pinned), rootfs, env


@task(name="run-build", cache_policy=NO_CACHE)
def run_build(workspace: str, source: SourceSpec, committed_at: int) -> dict[str, str]:
    """Run the build command in its container under its limits; the (masked) log, the output dir
    and the pinned image it ran in."""
    ws = Path(workspace)
    src = checkout_dir(ws)
    secrets = {var: store.get_secret(name) for var, name in source.secret_env.items()}
    hidden = [*secrets.values(), *masks(credentials(source.credentials_secret))]
    image, rootfs, image_env = _image(source)
    (ws / "build" / "home").mkdir(parents=True, exist_ok=True)
    sandbox.own_workdir(ws / "build")
    inside = f"{sandbox.WORKDIR}/src"
    # SOURCE_DATE_EPOCH: tools that stamp times (zip, sphinx, gcc) use the commit's, so equal inputs give equal bytes.
    env = {**image_env, "HOME": f"{sandbox.WORKDIR}/home", "LANG": "C.UTF-8", "SOURCE_DATE_EPOCH": str(committed_at), **source.env}
    cid = container_id("build", ws)
    box = sandbox.BuildBox(
        rootfs=str(ws / "container" / "rootfs"), workdir=str(ws / "build"), argv=["sh", "-c", source.build_command], cwd=inside,
        env=env, network=source.network, memory_bytes=source.memory_mb * 1024 * 1024, cpu=source.cpu,
        cgroups_path=cgroups.container_path(cid), init_binary=str(binaries.shim_binary(default_state_dir())),
        resolv_conf=sandbox.resolv_conf(),
    )
    container = Container(ws / "container", cid, Runc(cairn_home() / "builds" / "runc"))
    outcome = sandbox.run(container, rootfs, box, secrets, timeout_s=source.timeout_s, log_limit=LOG_LIMIT)
    text = redact(outcome.output.decode(errors="replace"), hidden)
    if outcome.exit_code is None:
        raise PermanentError(f"the build ran over its timeout of {source.timeout_s:g}s and was stopped{_log_tail(text)}",
                             hint="make the build faster or raise source.timeout_s")
    if outcome.exit_code != 0 and outcome.oom_killed:
        raise PermanentError(f"the build ran out of memory (limit {source.memory_mb} MB) and was killed (exit {outcome.exit_code})"
                             f"{_log_tail(text)}", hint="raise source.memory_mb or make the build use less")
    if outcome.exit_code != 0:
        raise PermanentError(f"the build command exited {outcome.exit_code}{_log_tail(text)}", hint="fix the build command")
    output = (src / source.output_dir).resolve()
    # A symlinked output dir could point anywhere on the worker: only the checkout may be packed.
    if not output.is_dir() or not output.is_relative_to(src.resolve()):
        raise PermanentError(f"the build produced no directory {source.output_dir!r} inside the checkout",
                             hint="make the build command write its output there, or fix source.output_dir")
    return {"log": text, "output": str(output), "image": image}


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
