"""Where the agent keeps what it knows, and how it reads it back after a restart.

Everything the agent and the shims share is a file under the state directory, written
atomically (write + rename), so a reader never sees half a record and a restarted agent
re-adopts instances by reading the tree alone:

    <state>/agent.sock, agent.pid, agent.log
    <state>/envs/<cluster>/<app>/<environment>/events.jsonl
    <state>/envs/<cluster>/<app>/<environment>/instances/<name>[~<k>]/
        config.json   what the instance is: its revision, image and OCI spec (no secret values)
        status.json   what its supervisor reports (phase, pids, restarts, ...)
        retiring      present once the agent began to stop it for a newer instance of its slot
        bundle/ rootfs/ layer/ run/ logs/   its container (container.py)
        code/ files/ etc/ netns             what is mounted into it; its network namespace
    <state>/images/   the content-addressed image store (cairn.images.store)
    <state>/runc/     runc's own state of this agent's containers
    <state>/bin/      cairn-shim, built from shim.c

A slot's replacement starts while the instance it replaces is still stopping (as a Deployment
creates a pod while the old one terminates), so for a while two directories hold one instance
name: the live one and one marked ``retiring``, which reads skip.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.paths import agent_state_dir
from cairn.runtime import EnvRef


def default_state_dir(state_dir: Path | str | None = None) -> Path:
    if state_dir is not None:
        return Path(state_dir)
    return agent_state_dir()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, prefix=".tmp-") as tmp:
        json.dump(data, tmp, sort_keys=True)
    os.replace(tmp.name, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (FileNotFoundError, json.JSONDecodeError):
        return None


@dataclass(frozen=True)
class EnvDir:
    root: Path
    env: EnvRef

    @classmethod
    def of(cls, state: Path, env: EnvRef) -> EnvDir:
        return cls(state / "envs" / env.cluster / env.app / env.environment, env)

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    def instance(self, name: str) -> Path:
        """The usual directory of instance ``name``; see :meth:`fresh` and :meth:`live`."""
        return self.root / "instances" / name

    def fresh(self, name: str) -> Path:
        """A directory no instance uses yet for a new instance ``name`` (callers hold the env lock)."""
        path, k = self.instance(name), 1
        while path.exists():
            path, k = self.root / "instances" / f"{name}~{k}", k + 1
        return path

    def generations(self, name: str) -> list[Path]:
        """Every directory of instance ``name``: the live one and those still retiring."""
        return [p for p in (self.instance(name), *sorted((self.root / "instances").glob(f"{name}~*"))) if p.is_dir()]

    def live(self, name: str) -> Path | None:
        return next((p for p in self.generations(name) if not retiring(p)), None)

    def instances(self) -> list[Path]:
        folder = self.root / "instances"
        return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


RETIRING = "retiring"


def retiring(directory: Path) -> bool:
    return (directory / RETIRING).exists()


def all_instance_dirs(state: Path) -> Iterator[Path]:
    yield from sorted(state.glob("envs/*/*/*/instances/*"))
