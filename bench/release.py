"""Issue 5's numbers on the local runtime: orchestration overhead and approval latency.

    .venv/bin/python bench/release.py [--rounds 3]

- overhead = release wall time (flow run start -> end) / sum over batches of the slowest
  instance's start-to-healthy time (its Scheduled event -> its Ready event); 8 instances in 4
  batches, no pause. Goal <= 1.10.
- approval latency = resume call -> the first instance of the next batch is created (its
  Scheduled event), while the pause is hot (goal <= 1 s) and after it became a suspend (<= 5 s).

Runs a private platform (temporary CAIRN_HOME) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path


def setup() -> str:
    """A private platform (its own CAIRN_HOME, no UI), started as `cairn up` starts one."""
    home = tempfile.mkdtemp(prefix="cairn-bench-")
    os.environ["CAIRN_HOME"] = home
    os.environ["PREFECT_UI_ENABLED"] = "false"
    from cairn.controlplane import up
    from cairn.controlplane.processes import free_port
    from cairn.images import build

    platform = up(port=free_port(4400))
    build.build_and_push(str(platform.registry), build.DEMO_VERSIONS)  # the versions shipped below
    return home


def teardown() -> None:
    from cairn.controlplane import down

    down(purge=True)


START_DELAY_S = 0.0


def register(instances: int) -> str:
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = f"bench-{uuid.uuid4().hex[:6]}"
    env = {"cluster": "bench-a", "image": "cairn/demo-app:v1", "instances": instances, "cpu": 0.25, "memory_mb": 96,
           "ports": [{"container_port": 8080}],
           "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.2, "timeout_s": 2, "failure_threshold": 50},
           "lifecycle": {"termination_grace_period_s": 5}}
    if START_DELAY_S:
        env["env"] = {"DEMO_START_DELAY_S": str(START_DELAY_S)}  # an app that takes a while to start, as real ones do
    store.apply(load_data({"clusters": [{"name": "bench-a"}], "apps": [{"name": app, "deploy_type": "image", "environments": {"production": env}}]}))
    return app


def events_by(app: str, reason: str) -> dict[str, list[float]]:
    from cairn.tasks.context import env_target

    t = env_target(app, "production")
    out: dict[str, list[float]] = {}
    for e in t.runtime.events(t.env):
        if e.reason == reason:
            out.setdefault(e.instance, []).append(e.time)
    return out


def overhead(rounds: int) -> list[float]:
    from prefect.client.orchestration import get_client

    from cairn.orders import actions
    from cairn.plan import PauseMode, plan_release
    from cairn.status import Status

    ratios = []
    for _ in range(rounds):
        app = register(8)
        actions.wait_for(actions.create_order(app, "production", "v1", 4, PauseMode.NONE)["id"], {Status.COMPLETED}, 600)
        since = time.time()
        order = actions.create_order(app, "production", "v2", 4, PauseMode.NONE)["id"]
        actions.wait_for(order, {Status.COMPLETED}, 600)
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(order)
        wall = (run.end_time - run.start_time).total_seconds()
        scheduled = {k: min(t for t in v if t >= since) for k, v in events_by(app, "Scheduled").items() if any(t >= since for t in v)}
        ready = {k: min(t for t in v if t >= since) for k, v in events_by(app, "Ready").items() if any(t >= since for t in v)}
        total = 0.0
        for batch in plan_release(8, 4).batches:
            names = [f"{app}-production-{s}" for s in batch.slots]
            total += max(ready[n] - scheduled[n] for n in names)
        ratios.append(wall / total)
        print(f"  overhead round: wall {wall:.2f}s, sum of slowest start-to-healthy {total:.2f}s, ratio {wall / total:.3f}")
    return ratios


def approval_latency(hot_pause_s: float, rounds: int) -> list[float]:
    from cairn.orders import actions
    from cairn.plan import PauseMode
    from cairn.status import Status

    latencies = []
    for _ in range(rounds):
        app = register(2)
        actions.wait_for(actions.create_order(app, "production", "v1", 1, PauseMode.NONE)["id"], {Status.COMPLETED}, 600)
        order = actions.create_order(app, "production", "v2", 2, PauseMode.FIRST_BATCH, hot_pause_s=hot_pause_s)["id"]
        paused = actions.wait_for(order, {Status.PAUSED}, 600)
        if hot_pause_s == 0:
            assert paused["state"] == "Suspended", paused
        time.sleep(1.0)  # let the suspended process exit, as a real approval comes later
        start = time.time()
        actions.resume(order)
        name = f"{app}-production-1"
        deadline = time.time() + 60
        while time.time() < deadline:
            created = [t for t in events_by(app, "Scheduled").get(name, []) if t >= start]
            if created:
                latencies.append(created[0] - start)
                break
            time.sleep(0.02)
        actions.wait_for(order, {Status.COMPLETED}, 600)
        print(f"  approval ({'hot' if hot_pause_s else 'suspended'}): {latencies[-1]:.3f}s")
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start-delay", type=float, default=0.0, help="seconds the demo app sleeps before listening")
    parser.add_argument("--only", choices=["overhead", "approval"], default=None)
    args = parser.parse_args()
    global START_DELAY_S
    START_DELAY_S = args.start_delay
    home = setup()
    try:
        ratios = overhead(args.rounds) if args.only in (None, "overhead") else []
        hot = approval_latency(600, args.rounds) if args.only in (None, "approval") else []
        cold = approval_latency(0, args.rounds) if args.only in (None, "approval") else []
    finally:
        teardown()
        shutil.rmtree(home, ignore_errors=True)  # as the docstring says: ~10 MB of database and logs a run
    if ratios:
        print(f"orchestration overhead (app start delay {START_DELAY_S}s): median {statistics.median(ratios):.3f} "
              f"(max {max(ratios):.3f}); goal <= 1.10")
    if hot:
        print(f"approval latency, hot pause: median {statistics.median(hot):.3f}s (max {max(hot):.3f}s); goal <= 1 s")
        print(f"approval latency, suspended: median {statistics.median(cold):.3f}s (max {max(cold):.3f}s); goal <= 5 s")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
