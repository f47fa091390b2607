"""Issue 11, item 2: 50 release orders at once on 50 environments (local runtime). (Not named
concurrent.py: a script's folder comes first on sys.path, and that name would hide the standard
library's `concurrent` package from every bench script.)

    .venv/bin/python bench/concurrency.py [--orders 50] [--instances 2] [--batches 2]

A private platform (server, worker, agent; temporary CAIRN_HOME). 50 apps of the demo app, one
environment each, 2 instances. Round 1 ships v1 to all 50 at once (1 batch, it creates the
instances); round 2, the measured one, ships v2 to all 50 at once in 2 batches, pause mode none.

- all complete;
- batch gap = from one batch's health (the latest Ready event of its instances) to the next
  batch's start (the first event of the next batch's instances after it: the old instance's
  Killing, or the new one's Scheduled). Goal p95 <= 2 s. Also, from the flows' task runs, the
  orchestration part alone: wait-healthy(k) end -> apply-batch(k+1) start;
- peak RSS, sampled every second: the Prefect server's process tree, the worker alone, the flow
  run processes the worker started (sum and count), the agent's tree (agent, shims, apps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import PeakRss, agent, alone, flow_runs, machine, percentile, tree
from bench.release import setup, teardown

GOAL_GAP_S = 2.0


def register(count: int, instances: int) -> list[str]:
    from cairn.blocks import store
    from cairn.configfile import load_data

    tag = uuid.uuid4().hex[:4]
    apps = [f"c{tag}-{k:02d}" for k in range(count)]
    env = {"cluster": "bench-a", "image": "cairn/demo-app:latest", "instances": instances, "cpu": 0.1, "memory_mb": 64,
           "ports": [{"container_port": 8080}],
           "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.2, "timeout_s": 2, "failure_threshold": 300},
           "lifecycle": {"termination_grace_period_s": 5}}
    store.apply(load_data({"clusters": [{"name": "bench-a"}],
                           "apps": [{"name": a, "deploy_type": "image", "environments": {"production": env}} for a in apps]}))
    return apps


def release_all(apps: list[str], version: str, batches: int, timeout_s: float) -> tuple[dict[str, dict[str, Any]], float]:
    """Create one order per app at once (threads: each create is a few API calls), wait for all."""
    from cairn.orders import actions
    from cairn.plan import PauseMode

    refused: list[str] = []

    def create(app: str) -> str:
        # Prefect's client already retries a 503 five times (~1 min); an SQLite server flooded by
        # 50 starting flow runs can still refuse. Counted and tried again: the idempotency key
        # makes a repeated create return the same run.
        from prefect.exceptions import PrefectHTTPStatusError

        for _ in range(5):
            try:
                return str(actions.create_order(app, "production", version, batches, PauseMode.NONE)["id"])
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 503:
                    raise
                refused.append(app)
        raise SystemExit(f"{app}: the server refused the order 5 times")

    began = time.time()
    with ThreadPoolExecutor(max_workers=10) as pool:
        created = list(pool.map(create, apps))
    print(f"  {len(created)} orders created in {time.time() - began:.1f}s ({len(refused)} creates answered 503 after Prefect's "
          f"own retries, then tried again)", flush=True)
    done: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while len(done) < len(apps) and time.monotonic() < deadline:
        rows = actions.list_orders(limit=10 * len(apps))
        for row in rows:
            if row["id"] in created and row["status"] in ("completed", "failed", "closed"):
                done[row["app"]] = row
        time.sleep(2)
    for row in done.values():
        if row["status"] != "completed":
            print(f"  {row['app']}: {row['status']}: {(row['message'] or '')[:300]}", flush=True)
    return done, time.time() - began


def events(app: str) -> list[tuple[float, str, str]]:
    from cairn.tasks.context import env_target

    t = env_target(app, "production")
    return sorted((e.time, e.instance, e.reason) for e in t.runtime.events(t.env))


def batch_gaps(app: str, instances: int, batches: int, since: float) -> list[float]:
    """Per batch boundary: batch k healthy (the latest, over its instances, of each new instance's
    first Ready after its Scheduled) -> the first event of batch k+1's instances after that."""
    from cairn.plan import plan_release

    evs = [e for e in events(app) if e[0] >= since]

    def healthy_at(name: str) -> float | None:
        scheduled = next((t for t, i, r in evs if i == name and r == "Scheduled"), None)
        return next((t for t, i, r in evs if i == name and r == "Ready" and scheduled is not None and t >= scheduled), None)

    gaps = []
    plan = plan_release(instances, batches).batches
    for k in range(len(plan) - 1):
        ready = [healthy_at(f"{app}-production-{s}") for s in plan[k].slots]
        nxt = {f"{app}-production-{s}" for s in plan[k + 1].slots}
        if None in ready:
            continue
        health = max(r for r in ready if r is not None)
        start = next((t for t, i, _ in evs if i in nxt and t >= health), None)
        if start is not None:
            gaps.append(start - health)
    return gaps


def task_gaps(order: str) -> list[float]:
    """wait-healthy(k) end -> apply-batch(k+1) start, from the flow's task runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(order)])), limit=50)
    ends = {int(r.name.split()[3]): r.end_time for r in runs if r.name.startswith("wait for batch") and r.end_time}
    starts = {int(r.name.split()[2]): r.start_time for r in runs if r.name.startswith("apply batch") and r.start_time}
    return [(starts[k + 1] - ends[k]).total_seconds() for k in sorted(ends) if k + 1 in starts]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=50)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    home = setup()
    try:
        from cairn.runtimes.local import agent_status

        state = json.loads((Path(home) / "platform.json").read_text())
        server, worker, agent_pid = state["server"]["pid"], state["worker"]["pid"], agent_status()["pid"]
        print(f"before: {machine()}", flush=True)
        apps = register(args.orders, args.instances)
        first, took = release_all(apps, "v1", 1, args.timeout)
        print(f"round 1 (v1, 1 batch): {sum(r['status'] == 'completed' for r in first.values())}/{len(apps)} completed in {took:.0f}s",
              flush=True)
        groups = {"server": tree(server), "worker": alone(worker), "flows": flow_runs(worker, home), "agent": agent(agent_pid, home)}
        with PeakRss(groups, period_s=1.0) as peaks:
            since = time.time()
            second, took = release_all(apps, "v2", args.batches, args.timeout)
        completed = [a for a, r in second.items() if r["status"] == "completed"]
        print(f"round 2 (v2, {args.batches} batches of {args.instances} instances): {len(completed)}/{len(apps)} completed in {took:.0f}s "
              f"(goal: all)", flush=True)
        gaps = [g for a in completed for g in batch_gaps(a, args.instances, args.batches, since)]
        tgaps = [g for a in completed for g in task_gaps(second[a]["id"])]
        result = {
            "orders": len(apps), "completed": len(completed), "round_s": round(took, 1),
            "batch_gap_s": {"median": round(statistics.median(gaps), 3), "p95": round(percentile(gaps, 95), 3), "max": round(max(gaps), 3),
                            "n": len(gaps)},
            "task_gap_s": ({"median": round(statistics.median(tgaps), 3), "p95": round(percentile(tgaps, 95), 3), "n": len(tgaps)}
                           if tgaps else None),
            "peak_rss_mib": {"server": round(peaks.peak["server"]), "worker": round(peaks.peak["worker"]),
                             "flow_processes": round(peaks.peak["flows"]), "flow_processes_count": peaks.count["flows"],
                             "agent_tree": round(peaks.peak["agent"])},
        }
        print(f"batch gap (health -> next batch's start): median {result['batch_gap_s']['median']:.2f}s, "
              f"p95 {result['batch_gap_s']['p95']:.2f}s, max {result['batch_gap_s']['max']:.2f}s; goal p95 <= {GOAL_GAP_S:.0f}s")
        if tgaps:
            print(f"  of which orchestration (wait-healthy end -> apply-batch start): median {result['task_gap_s']['median']:.2f}s, "
                  f"p95 {result['task_gap_s']['p95']:.2f}s")
        rss = result["peak_rss_mib"]
        print(f"peak RSS: server {rss['server']} MiB, worker {rss['worker']} MiB, "
              f"{peaks.count['flows']} flow processes {rss['flow_processes']} MiB, agent tree {rss['agent_tree']} MiB")
        print(json.dumps(result))
        print(f"after: {machine()}")
    finally:
        teardown()
        shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("CAIRN_HOME", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
