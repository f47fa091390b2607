"""``make demo``: the main job, on this machine's local runtime.

Starts (or reuses) a Prefect server, stores the demo secret, applies ``examples/shop.yaml``
and shows what was registered and the plan of a release. Stops what it started unless
``CAIRN_KEEP_UP=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from cairn.deployments import platform

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shop.yaml"
console = Console()


def cairn(*args: str, input: str | None = None) -> None:
    console.print(f"[dim]$ cairn {' '.join(args)}[/]")
    subprocess.run([sys.executable, "-m", "cairn.deployments.cli", *args], input=input, text=True, check=True)


def main() -> int:
    started = not platform.healthy(platform._read_state().get("server", {}).get("url", "http://127.0.0.1:1/api"))
    console.rule("cairn demo")
    server = platform.ensure_server()
    os.environ.update(platform.prefect_env(server.url))
    console.print(f"Prefect server: {server.url.removesuffix('/api')}")
    try:
        cairn("secret", "set", "shop-db-password", input="demo-password\n")
        cairn("apply", "-f", str(EXAMPLE))
        cairn("apply", "-f", str(EXAMPLE))
        cairn("app", "list")
        cairn("release", "create", "shop-api", "production", "--version", "v2", "--batches", "2", "--pause-mode", "first_batch", "--dry-run")
    finally:
        if started and not os.environ.get("CAIRN_KEEP_UP"):
            platform.stop_server()
    return 0


if __name__ == "__main__":
    sys.exit(main())
