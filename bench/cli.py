"""Issue 11, item 4: the CLI against a server with 1,000 release orders in its history.

    .venv/bin/python bench/cli.py [--orders 1000] [--runs 15] [--profile DIR] [--keep]

A private platform (temporary CAIRN_HOME: server, worker, local agent) ships one real app (2
instances, v1 then v2) so there are live instances and real revisions; then the history is
filled cheaply: ``--orders`` flow runs of the ``release`` deployment created directly in their
final states (80% Completed, 10% Failed, 10% Cancelled) with cairn's tags and parameters, over 10
environments, plus a rollback run for 5% of them and a pause-mode Variable for 10% (what
`release pause-mode` and resumes leave). Then each command runs as a user runs it (the `cairn`
script, a new process each time, human output) ``--runs`` times after one warm-up:

- `cairn release show ID` (the oldest real order, so a full id; and its 8-character prefix,
  which must look past the newest orders), `cairn release list`, `cairn instances APP ENV`;
  `cairn --help` as the floor (Python, typer and rich, no Prefect).

Goal: show and instances < 500 ms. ``--profile DIR`` also writes a pyinstrument HTML profile of
each command (the `bench` extra). ``--baseline REF`` also times the same commands as git REF
(e.g. the commit before a fix) ships them, against the same server: REF is exported with `git
archive`, built into a temporary folder and run with this interpreter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.measure import machine, percentile, summary, time_command  # noqa: E402
from bench.release import register, setup, teardown  # noqa: E402 - the private platform of issue 5's bench

ENVIRONMENTS = 10
T = TypeVar("T")
GOAL_S = 0.5


def real_orders(app: str) -> list[dict]:
    from cairn.orders import actions
    from cairn.plan import PauseMode
    from cairn.status import Status

    done = []
    for version, batches in (("v1", 1), ("v2", 2)):
        order = actions.wait_for(actions.create_order(app, "production", version, batches, PauseMode.NONE)["id"],
                                 {Status.COMPLETED, Status.FAILED}, 600)
        assert order["status"] == "completed", order
        done.append(order)
    return done


async def _retried(call: Callable[[], Awaitable[T]], attempts: int = 10) -> T:
    """A busy SQLite server answers 503 to a write now and then; the bench only wants its rows."""
    from prefect.exceptions import PrefectHTTPStatusError

    for attempt in range(attempts):
        try:
            return await call()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code != 503 or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


async def fill(app: str, orders: int, revisions: list[str], seed: int = 11) -> None:
    """``orders`` finished release orders over ENVIRONMENTS environments (the real one first),
    created straight in their final states: what the history of a busy platform holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate
    from prefect.states import Cancelled, Completed, Failed

    rnd = random.Random(seed)
    envs = [(app, "production")] + [(f"hist-{k:02d}", env) for k in range(ENVIRONMENTS // 2) for env in ("production", "test")]
    envs = envs[:ENVIRONMENTS]
    # SQLite takes one writer at a time: more than a few concurrent creates only earn 503s.
    gate = asyncio.Semaphore(2)
    async with get_client() as client:
        release = (await client.read_deployment_by_name("release/release")).id
        rollback = (await client.read_deployment_by_name("rollback/rollback")).id

        async def one(k: int) -> None:
            a, e = envs[k % len(envs)]
            version = f"v{k // len(envs) + 3}"
            draw = rnd.random()
            state = Completed() if draw < 0.8 else Failed(message="batch 2 failed: bench") if draw < 0.9 else Cancelled()
            tags = ["cairn", "kind:release", f"app:{a}", f"env:{e}", f"rev:{revisions[k % len(revisions)][:32]}",
                    f"request:bench{k}", "by:bench"]
            params = {"app": a, "environment": e, "version": version, "batches": 2, "pause_mode": "first_batch"}
            rolled_back, switched = rnd.random() < 0.05, rnd.random() < 0.10
            async with gate:
                run = await _retried(lambda: client.create_flow_run_from_deployment(release, parameters=params, tags=tags, state=state,
                                                                                    name=f"{a}-{e}-{version}"))
                if rolled_back:
                    await _retried(lambda: client.create_flow_run_from_deployment(
                        rollback, parameters={"app": a, "environment": e, "order": str(run.id), "batches": 2},
                        tags=["cairn", "kind:rollback", f"app:{a}", f"env:{e}", f"rollback-of:{run.id}", "by:bench"], state=Completed()))
                if switched:
                    value = {"pause_mode": "every_batch", "history": [{"pause_mode": "every_batch", "by": "bench", "at": 0, "why": "switched"}]}
                    await _retried(lambda: client.create_variable(VariableCreate(name=f"cairn_order_{run.id.hex}", value=value)))

        await asyncio.gather(*(one(k) for k in range(orders)))


def commands(app: str, order: str) -> dict[str, list[str]]:
    return {
        "cairn --help": ["--help"],
        "cairn release show ID": ["release", "show", order],
        "cairn release show PREFIX": ["release", "show", order[:8]],
        "cairn release list": ["release", "list"],
        "cairn instances APP ENV": ["instances", app, "production"],
    }


def baseline_cli(ref: str, into: Path) -> list[str]:
    """``cairn`` as of git ``ref``, built into ``into``; the repository itself is left untouched."""
    src, pkg = into / "src", into / "pkg"
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(pkg), str(src)],
                   check=True, capture_output=True)
    # The folder goes first on sys.path, ahead of the editable install of this working tree.
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(pkg)!r}); sys.argv[0] = 'cairn'; "
            "from cairn.cli.main import main; main()"]


def time_all(cli: list[str], cmds: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, dict[str, float] | str]:
    results: dict[str, dict[str, float] | str] = {}
    for label, argv in cmds.items():
        try:
            walls, cpus = time_command([*cli, *argv], runs, env=env)
        except RuntimeError as exc:  # a baseline may not answer at all (an old order by prefix)
            results[label] = f"fails: {str(exc).splitlines()[-1][:120]}"
            print(f"  {label:28} {results[label]}", flush=True)
            continue
        results[label] = {"median_s": round(statistics.median(walls), 3), "p95_s": round(percentile(walls, 95), 3),
                          "cpu_median_s": round(statistics.median(cpus), 3)}
        goal = f"  (goal < {GOAL_S * 1000:.0f} ms)" if "show" in label or "instances" in label else ""
        print(f"  {label:28} {summary(walls)}, CPU median {statistics.median(cpus) * 1000:.0f} ms{goal}", flush=True)
    return results


def profile(cairn: str, cmds: dict[str, list[str]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for label, args in cmds.items():
        html = out / (label.replace(" ", "_").lower() + ".html")
        subprocess.run([sys.executable, "-m", "pyinstrument", "-r", "html", "-o", str(html), cairn, *args],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"  profile: {html}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--profile", type=Path, default=None, help="write a pyinstrument profile of each command here")
    ap.add_argument("--baseline", default=None, metavar="REF", help="also time git REF's cairn (e.g. the commit before a fix)")
    ap.add_argument("--keep", action="store_true", help="leave the platform running (prints its CAIRN_HOME)")
    args = ap.parse_args()
    home = setup()
    try:
        app = register(2)
        real = real_orders(app)
        revisions = [o["revision"] for o in real]
        began = time.monotonic()
        asyncio.run(fill(app, args.orders, revisions))
        print(f"filled {args.orders} orders in {time.monotonic() - began:.0f}s", flush=True)
        cairn = str(Path(sys.executable).with_name("cairn"))
        cmds = commands(app, real[0]["id"])
        env = dict(os.environ)
        print(f"{args.orders} orders in the history; {machine()}", flush=True)
        results = {"this tree": time_all([cairn], cmds, args.runs, env)}
        if args.baseline:
            with tempfile.TemporaryDirectory(prefix="cairn-baseline-") as tmp:
                print(f"baseline {args.baseline}; {machine()}", flush=True)
                results[args.baseline] = time_all(baseline_cli(args.baseline, Path(tmp)), cmds, args.runs, env)
        if args.profile:
            profile(cairn, cmds, args.profile)
        print(json.dumps(results))
        print(f"after: {machine()}")
    finally:
        if args.keep:
            print(f"kept: CAIRN_HOME={home} PREFECT_API_URL={os.environ['PREFECT_API_URL']}")
        else:
            teardown()
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
