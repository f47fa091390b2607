"""Issue 17: what a local container costs: create -> ready, and the memory of its supervision.

Against the real local agent (runc + cairn-shim) and a real registry on loopback, with the demo
app image already in the agent's store (bench/images.py measures the first pull and unpack):

  create -> ready   one instance: ``ensure`` of a fresh slot until ``observe`` says ready
                    (the instance's Scheduled -> Ready events, and the caller's wall time)
  PSS               8 instances running: each shim's PSS (/proc/PID/smaps_rollup), beside the
                    app it supervises; the agent's own PSS once, for all of them

    flock /tmp/cairn-suite.lock .venv/bin/python bench/containers.py [--runs 20] [--instances 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--instances", type=int, default=8)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cairn-bench-containers-"))
    os.environ["CAIRN_HOME"] = str(tmp / "home")
    from cairn.config import EnvironmentSpec
    from cairn.images import build, registry
    from cairn.revision import Revision
    from cairn.runtime import EnvRef
    from cairn.runtimes.local import LocalRuntime, agent_status, start_agent, stop_agent

    state = tmp / "agent"
    address = registry.start(tmp / "registry", port=0)
    try:
        build.build_and_push(address, ("v1",))
        start_agent(state)
        runtime = LocalRuntime(state)
        env = EnvRef("local", f"bench-{uuid.uuid4().hex[:4]}", "test")
        spec = EnvironmentSpec.model_validate({
            "cluster": "local", "image": f"{address}/cairn/demo-app:v1", "instances": 2, "cpu": 0.25, "memory_mb": 96,
            "ports": [{"container_port": 8080}],
            "health_check": {"http": {"port": 8080, "path": "/healthz"}, "period_s": 0.1, "timeout_s": 1, "failure_threshold": 100}})
        revision = Revision(app=env.app, environment="test", deploy_type="image", version="v1", spec=spec)
        runtime.ensure(env, [0], revision)  # pulls and unpacks once: not part of the figures
        runtime.terminate(env, [0])
        walls, events = [], []
        for run in range(args.runs):
            began = time.monotonic()
            runtime.ensure(env, [run + 1], revision)
            while not [i for i in runtime.observe(env) if i.slot == run + 1 and i.ready]:
                time.sleep(0.01)
            walls.append(time.monotonic() - began)
            name = env.instance(run + 1)
            seen = {e.reason: e.time for e in runtime.events(env, instance=name)}
            events.append(seen["Ready"] - seen["Scheduled"])
            runtime.terminate(env, [run + 1])
        slots = list(range(100, 100 + args.instances))
        runtime.ensure(env, slots, revision)
        while len([i for i in runtime.observe(env) if i.ready]) < args.instances:
            time.sleep(0.05)
        shims, apps = [], []
        for directory in sorted((state / "envs").glob("*/*/*/instances/*")):
            shims.append(pss_kib(int((directory / "run" / "shim.pid").read_text())))
            apps.append(pss_kib(int((directory / "run" / "pid").read_text())))
        agent = pss_kib(int(agent_status(state)["pid"]))
        runtime.terminate(env, slots)
        print(f"create -> ready, one instance, median of {args.runs} (image cached):")
        print(f"  caller's wall (ensure .. observe ready): median {statistics.median(walls):.3f}s "
              f"(min {min(walls):.3f}, max {max(walls):.3f})")
        print(f"  Scheduled -> Ready events:               median {statistics.median(events):.3f}s "
              f"(min {min(events):.3f}, max {max(events):.3f})")
        print(f"PSS with {args.instances} instances running:")
        print(f"  shim per instance: median {statistics.median(shims) / 1024:.2f} MiB (max {max(shims) / 1024:.2f})")
        print(f"  demo app per instance: median {statistics.median(apps) / 1024:.2f} MiB")
        print(f"  agent (supervises all of them): {agent / 1024:.1f} MiB")
        print(f"  load average: {os.getloadavg()[0]:.2f}")
    finally:
        stop_agent(state, purge=True)
        registry.stop(tmp / "registry")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
