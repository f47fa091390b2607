"""The timing figures the behaviour tests no longer hold as budgets (issue 16, section 6).

    .venv/bin/python bench/timings.py [--rounds 5]

On the local runtime (a private agent in a temporary CAIRN_HOME, removed afterwards), each
figure over --rounds rounds, as min / median / max:

- health verdict: ensure -> FAILED for an app whose /healthz answers 500 (budget 3 s:
  period 0.5 s, threshold 3, timeout 1 s), the test's old "budget + 5 s" bound;
- long poll, no change: how long ``observe_slots(unless=..., wait_s=1.5)`` takes past wait_s
  (the old test bound: under 10 s);
- long poll, a change: replacement begun -> the poll's answer with the new instance
  (the old test bound: under 30 s);
- terminate, PreStop overrunning a 2 s grace period: how long terminate takes (old bound:
  grace + 4 s).

Needs root (the local runtime's namespaces and cgroups).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cairn-bench-timings-"))
    os.environ["CAIRN_HOME"] = str(home)
    from cairn.runtime import Phase
    from cairn.runtimes.local import LocalRuntime, start_agent, stop_agent
    from tests.behaviour.conftest import Harness

    state = home / "agent"
    assert start_agent(state)["running"]
    h = Harness("local", LocalRuntime(state), state, None)
    figures: dict[str, list[float]] = {"health verdict": [], "long poll, no change (past wait_s)": [],
                                       "long poll, a change": [], "terminate, PreStop over a 2 s grace": []}
    try:
        for _ in range(args.rounds):
            env = h.env("bverdict")
            rev = h.revision(env, env={"DEMO_FAIL_HEALTH": "1"}, health_check={"period_s": 0.5, "failure_threshold": 3})
            began = time.monotonic()
            h.ensure(env, [0], rev)
            h.wait(env, lambda i: bool(i) and i[0].phase is Phase.FAILED, 60, "FAILED")
            figures["health verdict"].append(time.monotonic() - began)

            env = h.env("bpoll")
            h.ensure(env, [0, 1], h.revision(env, "v1"))
            ready = h.wait_ready(env, 2)
            began = time.monotonic()
            h.runtime.observe_slots(env, [1], unless=[ready[1]], wait_s=1.5)
            figures["long poll, no change (past wait_s)"].append(time.monotonic() - began - 1.5)
            now = h.runtime.observe(env)[0]
            replace = threading.Thread(target=h.ensure, args=(env, [0], h.revision(env, "v2")))
            began = time.monotonic()
            replace.start()
            h.runtime.observe_slots(env, [0], unless=[now], wait_s=120)
            figures["long poll, a change"].append(time.monotonic() - began)
            replace.join()

            env = h.env("bstop")
            h.ensure(env, [0], h.revision(env, lifecycle={"pre_stop": {"exec": {"command": ["sleep", "30"]}},
                                                          "termination_grace_period_s": 2}))
            h.wait_ready(env, 1)
            began = time.monotonic()
            h.runtime.terminate(env, [0])
            figures["terminate, PreStop over a 2 s grace"].append(time.monotonic() - began)
    finally:
        h.cleanup()
        stop_agent(state, purge=True)
    load = os.getloadavg()
    print(f"rounds {args.rounds}, load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("| figure | min / median / max |\n|---|---|")
    for name, values in figures.items():
        print(f"| {name} | {spread(values)} |")


if __name__ == "__main__":
    main()
