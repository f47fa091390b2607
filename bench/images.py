"""Issue 17 groundwork: what the project's images cost to build, push, pull and unpack.

Against a real registry on loopback (Debian's docker-registry, started in a temp dir):
  build      cairn/python:3.11 alone, then base + cairn/demo-app:v1 (fresh layout each run)
  push       the base to an empty registry, then the demo app (its base layer is there already)
  pull       the base by digest into an empty store, then umoci unpack (first start's cost)
  cached     pull of a digest already in the store, and a second unpack (both no-ops)
Prints a markdown table (median of --runs) and the image sizes.

    flock /tmp/cairn-suite.lock .venv/bin/python bench/images.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cairn.images import build, registry
from cairn.images.layout import Layout
from cairn.images.store import ImageStore


def timed(fn: Callable[[], object]) -> float:
    begun = time.perf_counter()
    fn()
    return time.perf_counter() - begun


def du_mib(path: Path) -> float:
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 2**20


def run_once(work: Path, samples: dict[str, list[float]], sizes: dict[str, float]) -> None:
    state = work / "registry"
    url = registry.start(state, port=0)
    try:
        samples["build cairn/python:3.11"].append(timed(lambda: build.build(work / "base-only", ())))
        built: list[build.Built] = []
        samples["build base + cairn/demo-app:v1"].append(timed(lambda: built.append(build.build(work / "layout", ("v1",)))))
        layout = built[0].layout
        samples["push base (empty registry)"].append(timed(lambda: build.push(layout, "cairn/python:3.11", url)))
        samples["push demo-app:v1 (base layer present)"].append(timed(lambda: build.push(layout, "cairn/demo-app:v1", url)))
        digest = built[0].manifests["cairn/python:3.11"]
        store = ImageStore(work / "store")
        ref = f"{url}/cairn/python:3.11@{digest}"
        samples["pull base by digest (empty store)"].append(timed(lambda: store.pull(ref)))
        samples["first unpack of the base (umoci)"].append(timed(lambda: store.unpack(digest)))
        samples["pull again (digest in store)"].append(timed(lambda: store.pull(ref)))
        samples["unpack again (no-op)"].append(statistics.median(timed(lambda: store.unpack(digest)) for _ in range(20)))
        if not sizes:
            for entry in Layout(layout).index():
                name = entry["annotations"]["org.opencontainers.image.ref.name"]
                manifest = json.loads((layout / "blobs/sha256" / entry["digest"][7:]).read_bytes())
                sizes[f"{name}: compressed layers"] = sum(layer["size"] for layer in manifest["layers"]) / 2**20
            sizes["cairn/python:3.11: unpacked rootfs"] = du_mib(store.unpack(digest))
            sizes["registry storage after both pushes"] = du_mib(state / "storage")
    finally:
        registry.stop(state)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {k: [] for k in (
        "build cairn/python:3.11", "build base + cairn/demo-app:v1", "push base (empty registry)",
        "push demo-app:v1 (base layer present)", "pull base by digest (empty store)",
        "first unpack of the base (umoci)", "pull again (digest in store)", "unpack again (no-op)")}
    sizes: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-images-") as tmp:
        for run in range(args.runs):
            run_once(Path(tmp) / f"run{run}", samples, sizes)
    print(f"| step | median of {args.runs} (s) | min | max |\n| --- | --- | --- | --- |")
    for name, values in samples.items():
        unit = 1000 if max(values) < 0.1 else 1
        suffix = " ms" if unit == 1000 else ""
        print(f"| {name} | {statistics.median(values) * unit:.3g}{suffix} | {min(values) * unit:.3g}{suffix} "
              f"| {max(values) * unit:.3g}{suffix} |")
    print("\n| image | MiB |\n| --- | --- |")
    for name, mib in sizes.items():
        print(f"| {name} | {mib:.1f} |")


if __name__ == "__main__":
    main()
