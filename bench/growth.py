"""Issue 11, item 5: how release time and platform memory grow with the environment's size.

    .venv/bin/python bench/growth.py [--sizes 10,100,1000] [--batches 10] [--plot bench/growth.png]

Kwok cluster b through the kubernetes runtime (the local runtime cannot hold 1,000 instances on
2 cores: each is a real process). One private platform (server, worker, agent); per size a new
app of N instances: v1 first (creates the pods), then v2, measured, in 10 batches, pause mode
none. Per size: the v2 order's flow run time and create -> completed, and the peak RSS (sampled
every 0.5 s during v2) of the Prefect server's tree, the worker alone, the order's flow run
process and the agent's tree. Prints a table; draws both against size in a PNG (matplotlib,
the `bench` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import kwok  # noqa: E402
from bench.measure import PeakRss, alone, flow_runs, machine, tree  # noqa: E402
from bench.release import setup, teardown  # noqa: E402 - the private platform of issue 5's bench

CLUSTER, NAMESPACE = "b", "cairn-growth"
PARTS = ("server", "worker", "flow", "agent")


def one_size(instances: int, batches: int, pids: dict[str, Any]) -> dict[str, Any]:
    app = kwok.register(CLUSTER, NAMESPACE, instances)
    kwok.release(app, "v1", batches)
    groups = {"server": tree(pids["server"]), "worker": alone(pids["worker"]), "flow": flow_runs(pids["worker"], pids["home"]),
              "agent": tree(pids["agent"])}
    with PeakRss(groups, period_s=0.5) as peak:
        done = kwok.release(app, "v2", batches)
    kwok.kubectl(CLUSTER, "-n", NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={app}", "--wait=false")
    return {"instances": instances, "flow_s": done.flow_s, "wall_s": done.wall_s, "rss_mib": dict(peak.peak),
            "rss_total_mib": sum(peak.peak.values())}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["instances"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(sizes, [r["flow_s"] for r in rows], "o-", label="flow run")
    left.plot(sizes, [r["wall_s"] for r in rows], "s--", label="create -> completed")
    left.set(xscale="log", yscale="log", xlabel="instances (10 batches, kwok)", ylabel="seconds", title="release time")
    left.legend()
    bottom = [0.0] * len(rows)
    for part in PARTS:
        values = [r["rss_mib"][part] for r in rows]
        right.bar([str(s) for s in sizes], values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    right.set(xlabel="instances", ylabel="peak RSS (MiB)", title="platform memory")
    right.legend()
    fig.suptitle(f"cairn growth: {machine()}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--plot", type=Path, default=ROOT / "bench" / "growth.png")
    args = ap.parse_args()
    print(f"before: {machine()}", flush=True)
    kwok.fresh_namespace(CLUSTER, NAMESPACE)
    home = setup()
    rows = []
    try:
        from cairn.runtimes.local import agent_status

        state = json.loads((Path(home) / "platform.json").read_text())
        pids = {"server": state["server"]["pid"], "worker": state["worker"]["pid"], "agent": agent_status()["pid"], "home": home}
        for size in (int(s) for s in args.sizes.split(",")):
            row = one_size(size, args.batches, pids)
            rows.append(row)
            r = row["rss_mib"]
            print(f"  {size:5d} instances: flow run {row['flow_s']:6.1f}s, create->completed {row['wall_s']:6.1f}s; peak RSS "
                  f"server {r['server']:.0f}, worker {r['worker']:.0f}, flow {r['flow']:.0f}, agent {r['agent']:.0f} = "
                  f"{row['rss_total_mib']:.0f} MiB  ({machine()})", flush=True)
    finally:
        teardown()
        shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("CAIRN_HOME", None)
        kwok.kubectl(CLUSTER, "delete", "namespace", NAMESPACE, "--wait=false")
    print("| instances | flow run (s) | create -> completed (s) | s per 100 instances | server | worker | flow | agent | total (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        r = row["rss_mib"]
        print(f"| {row['instances']} | {row['flow_s']:.1f} | {row['wall_s']:.1f} | {100 * row['flow_s'] / row['instances']:.2f} | "
              f"{r['server']:.0f} | {r['worker']:.0f} | {r['flow']:.0f} | {r['agent']:.0f} | {row['rss_total_mib']:.0f} |")
    plot(rows, args.plot)
    print(f"plot: {args.plot}")
    print(json.dumps(rows))
    print(f"after: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
