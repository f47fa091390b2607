"""The kubernetes runtime alone, no Prefect: where a batch's time goes (issue 7's diagnosis).

    .venv/bin/python bench/k8s_runtime.py [--instances 300] [--batches 10] [--no-service]

N pods of v1 on cluster a's kwok nodes, then v2 batch by batch, as a release order's tasks call
the runtime: ``ensure`` on the batch's slots, then ``observe_slots`` long polls until they are
all ready on v2. Per batch: how long creating the new pods took (until admission starts), how
long admission took (until the scheduler and kwok have started them), and the wait for ready.
Set against bench/k8s_release.py's flow run, the difference is what the platform adds.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.k8s_release import NAMESPACE, kubectl, prepared_cluster, quiet


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=300)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--no-service", dest="service", action="store_false", help="no port mapping, so no Service")
    args = ap.parse_args()
    info = prepared_cluster()
    from cairn.config import EnvironmentSpec
    from cairn.revision import Revision
    from cairn.runtime import EnvRef
    from cairn.runtimes.kubernetes import KubernetesRuntime
    from cairn.runtimes.kubernetes import runtime as k8s_runtime

    a = info["clusters"]["a"]
    rt = KubernetesRuntime(kubeconfig=Path(a["kubeconfig"]).read_text(), context=a["context"], namespace=NAMESPACE, drain_s=0)
    env = EnvRef(cluster="bench", app=f"rt-{uuid.uuid4().hex[:6]}", environment="production")
    spec = EnvironmentSpec.model_validate({
        "cluster": "bench", "image": "cairn/demo-app:v1", "instances": args.instances, "cpu": 0.01, "memory_mb": 32,
        "ports": [{"container_port": 8080}] if args.service else [], "lifecycle": {"termination_grace_period_s": 1}})

    # Admission is where creating ends and waiting on the cluster begins: time it from outside.
    marks: dict[str, float] = {}
    admit = k8s_runtime.admit

    def timed_admit(*a: object, **k: object) -> dict[str, str]:
        marks["admitting"] = time.monotonic()
        try:
            return admit(*a, **k)  # type: ignore[arg-type]
        finally:
            marks["admitted"] = time.monotonic()

    k8s_runtime.admit = timed_admit  # type: ignore[assignment]

    def ship(version: str, report: bool) -> float:
        revision = Revision(app=env.app, environment=env.environment, deploy_type="image", version=version, spec=spec)
        per = args.instances // args.batches
        began = time.monotonic()
        for b in range(args.batches):
            slots = list(range(b * per, args.instances if b == args.batches - 1 else (b + 1) * per))
            start = time.monotonic()
            rt.ensure(env, slots, revision)
            ensured = time.monotonic()
            seen = rt.observe_slots(env, slots)
            while not (len(seen) == len(slots) and all(i.ready and i.revision == revision.digest for i in seen)):
                seen = rt.observe_slots(env, slots, unless=seen, wait_s=5)
            if report:
                print(f"  batch {b + 1}: ensure {ensured - start:.2f} s (creating {marks['admitting'] - start:.2f}, "
                      f"admission {marks['admitted'] - marks['admitting']:.2f}), then ready after {time.monotonic() - ensured:.2f} s",
                      flush=True)
        return time.monotonic() - began

    ship("v1", report=False)
    took = ship("v2", report=True)
    print(f"runtime alone: {args.instances} instances in {args.batches} batches, {'with' if args.service else 'no'} Service: {took:.2f} s")
    kubectl(info, "-n", NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={env.app}", "--wait=false")
    quiet(info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
