"""``make demo``: a real release on this machine's local runtime.

Starts (or reuses) the platform (image registry, Prefect server, worker, deployments, node
agent), builds the project's images and pushes them to the platform's registry (the short name
``cairn/python:3.11`` in the example resolves there), applies ``examples/shop.yaml``, packs
the demo app as code packages v1 and v2, ships v1, then ships v2 in 2 batches with
``first_batch``: prints the Prefect UI link of the paused run, approves from the CLI, waits, and
shows every instance serving v2 (``curl`` of each one's ``/version``). Stops what it started
unless ``CAIRN_KEEP_UP=1`` (or the platform was already up).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shop.yaml"
APP, ENV = "shop-api", "production"
console = Console()


def cairn(*args: str, input: str | None = None, capture: bool = False) -> str:
    console.print(f"[bold cyan]$ cairn {' '.join(args)}[/]")
    proc = subprocess.run([sys.executable, "-m", "cairn.cli.main", *args], input=input, text=True,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode != 0:
        raise SystemExit(f"demo: `cairn {' '.join(args)}` exited {proc.returncode}")
    return proc.stdout or ""


def package(version: str, workdir: Path) -> Path:
    src = workdir / version
    src.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "demo-app" / "app.py", src / "app.py")
    (src / "VERSION").write_text(version + "\n")
    return src


def main() -> int:
    from cairn.controlplane import processes as platform

    was_up = platform.processes()["server"]["healthy"]
    console.rule("cairn demo: a real release on the local runtime")
    # `cairn up` is cairn.controlplane.up(); every later command finds the platform it started
    # from $CAIRN_HOME, as in a user's new shell: nothing is exported.
    up = json.loads(cairn("up", "--json", capture=True))
    console.print(f"Prefect UI: [link]{up['ui']}[/]")
    try:
        from cairn.images import build

        # Reproducible, so a second demo run pushes the same digests (and builds nothing anew).
        console.rule(f"build the images, push them to {up['registry']}")
        for ref, digest in build.build_and_push(up["registry"], build.DEMO_VERSIONS).items():
            console.print(f"{ref}@{digest}", highlight=False)
        cairn("secret", "set", "shop-db-password", input="demo-password\n")
        cairn("apply", "-f", str(EXAMPLE))
        # A version is immutable: a demo run before this one (perhaps of an older cairn) may have
        # added v1 and v2 already, and they are what gets shipped again.
        have = {p["version"] for p in json.loads(cairn("package", "list", APP, "--json", capture=True))}
        with tempfile.TemporaryDirectory() as tmp:
            for version in ("v1", "v2"):
                if version in have:
                    console.print(f"package {APP} {version} is registered already")
                else:
                    cairn("package", "add", APP, version, str(package(version, Path(tmp))))
        current = json.loads(cairn("instances", APP, ENV, "--json", capture=True))
        if not current or any(i["phase"] != "running" for i in current):
            console.rule("ship v1 (no pause)")
            cairn("release", "create", APP, ENV, "--version", "v1", "--batches", "2", "--pause-mode", "none", "--wait")
        console.rule("ship v2 in 2 batches, pause after the first")
        order = json.loads(cairn("release", "create", APP, ENV, "--version", "v2", "--batches", "2", "--pause-mode", "first_batch",
                                 "--json", capture=True))
        cairn("release", "wait", order["id"])
        console.print(f"[bold]paused for approval[/]: {order['url']}")
        cairn("release", "resume", order["id"], "--comment", "demo: first batch looks good")
        cairn("release", "wait", order["id"])
        instances = json.loads(cairn("instances", APP, ENV, "--json", capture=True))
        cairn("instances", APP, ENV)
        versions = {}
        for i in instances:
            url = f"http://{i['address']}:8080/version"
            versions[i["name"]] = httpx.get(url, timeout=5).text.strip()
            console.print(f"$ curl {url}\n{versions[i['name']]}")
        if set(versions.values()) != {"v2"} or len(versions) != 4:
            console.print(f"[bold red]demo failed[/]: versions {versions}")
            return 1
        console.print("[bold green]every instance serves v2[/]")
        return 0
    finally:
        if not was_up and not os.environ.get("CAIRN_KEEP_UP"):
            cairn("down", "--purge")


if __name__ == "__main__":
    sys.exit(main())
