"""Issue 8's numbers: what the local load balancer adds, and what a release loses through it.

    .venv/bin/python bench/balancer.py [--rate 500] [--seconds 10]

- added latency: p50/p99 of HTTP requests (a new connection each, open loop at --rate) through
  the balancer's 127.0.0.1 listener, against the same requests sent straight to the instances'
  own addresses (10.213.x.y:8080, spread round robin by the client), 4 demo-app instances;
  for both policies (the agent is restarted in between, which also exercises re-adoption), on
  /version alone and on a mix with 5% /slow?ms=200 (where least-connections should pay off).
- lost during a release: failed requests at 200/s through the balancer while 4 instances are
  replaced in 2 batches (goal 0).

Runs a private platform (temporary CAIRN_HOME) and removes it afterwards. Traffic goes only to
loopback and to the instances this bench's agent created.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from release import setup, teardown

MAX_REQUESTS = 20_000


async def _one(host: str, port: int, path: str) -> float:
    began = time.perf_counter()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(data[:60])
    return time.perf_counter() - began


async def _load(targets: list[tuple[str, int]], rate: float, seconds: float, slow_every: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    failed = 0
    count = min(int(rate * seconds), MAX_REQUESTS)

    async def fire(k: int) -> None:
        nonlocal failed
        host, port = targets[k % len(targets)]
        path = "/slow?ms=200" if slow_every and k % slow_every == 0 else "/version"
        try:
            latencies.append(await _one(host, port, path))
        except Exception:  # noqa: BLE001 - counted
            failed += 1

    began = time.perf_counter()
    tasks = []
    for k in range(count):
        delay = began + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(k)))
    await asyncio.gather(*tasks)
    return latencies, failed


def load(targets: list[tuple[str, int]], rate: float, seconds: float, slow_every: int = 0) -> tuple[list[float], int]:
    return asyncio.run(_load(targets, rate, seconds, slow_every))


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * q))] * 1000 if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    home = setup()
    try:
        run(args.rate, args.seconds)
    finally:
        teardown()
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def run(rate: float, seconds: float) -> None:
    from cairn.orders import actions
    from cairn.plan import PauseMode
    from cairn.runtimes.local import start_agent, stop_agent
    from cairn.status import Status
    from cairn.tasks.context import env_target

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.test_traffic import free_port, register

    port = free_port()
    app = register(port)
    order = actions.create_order(app, "production", "v1", 2, PauseMode.NONE)["id"]
    assert actions.wait_for(order, {Status.COMPLETED}, timeout_s=300)["status"] == "completed"
    t = env_target(app, "production")
    direct = [(i.address, 8080) for i in t.runtime.observe(t.env) if i.address]
    assert direct and all(h.startswith("10.213.") for h, _ in direct), direct
    print(f"load average {os.getloadavg()[0]:.1f}; {rate:g} req/s for {seconds:g} s, a new connection per request")
    print("| policy | traffic | direct p50 / p99 (ms) | balancer p50 / p99 (ms) | added p50 / p99 (ms) | failed |")
    print("|---|---|---|---|---|---|")
    for policy in ("least-connections", "round-robin"):
        os.environ["CAIRN_TRAFFIC_POLICY"] = policy
        stop_agent()  # instances keep running; the new agent re-adopts them and listens again
        start_agent()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            view = t.runtime.traffic(t.env)
            if view.listeners and sum(b.state == "ready" for b in view.listeners[0].backends) == 4:
                break
            time.sleep(0.1)
        assert view.policy == policy, view
        for label, slow in (("/version", 0), ("5% /slow 200ms", 20)):
            d_lat, d_fail = load(direct, rate, seconds, slow)
            b_lat, b_fail = load([("127.0.0.1", port)], rate, seconds, slow)
            print(f"| {policy} | {label} | {pct(d_lat, .5):.1f} / {pct(d_lat, .99):.1f} | {pct(b_lat, .5):.1f} / "
                  f"{pct(b_lat, .99):.1f} | {pct(b_lat, .5) - pct(d_lat, .5):+.1f} / {pct(b_lat, .99) - pct(d_lat, .99):+.1f} "
                  f"| {d_fail} / {b_fail} |", flush=True)

    result: list[tuple[list[float], int]] = []
    for version in ("v2", "v1"):
        thread = threading.Thread(target=lambda: result.append(load([("127.0.0.1", port)], 200, 60, 25)))
        stop_at = time.monotonic()
        thread.start()
        time.sleep(1)
        order = actions.create_order(app, "production", version, 2, PauseMode.NONE)["id"]
        done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s=300)
        took = time.monotonic() - stop_at
        thread.join()
        lat, failed = result[-1]
        print(f"release to {version} (4 instances, 2 batches, {done['status']}) under 200 req/s with 4% /slow?ms=200"
              f" : {len(lat) + failed} requests over 60 s (release took ~{took - 1:.0f} s), {failed} failed, "
              f"p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms, max {max(lat) * 1000:.0f} ms", flush=True)
    print(f"median direct latency sanity: {statistics.median(d_lat) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
