"""When a pod does not fit: the kubernetes runtime on cluster a's real node.

A pod that does not fit *yet* (room is being freed by a pod that is stopping, here another
environment's replaced instance) waits for the scheduler, as a Deployment's would; a pod that
cannot fit (nothing is freeing room) fails ``ensure`` at once with the scheduler's reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from cairn.errors import PermanentError
from tests.behaviour.conftest import K8sHarness, _kubernetes, k8s_images  # noqa: F401 - publishes cairn/demo-app:vN

pytestmark = [pytest.mark.k8s]


@pytest.fixture
def harness(k8s_cluster: Any, k8s_images: None) -> Iterator[K8sHarness]:  # noqa: F811 - the imported fixture
    made = _kubernetes(k8s_cluster, k8s_images)
    assert isinstance(made, K8sHarness)
    yield made
    made.cleanup()


def _most_of_the_node(harness: K8sHarness) -> float:
    """Three quarters of the real node's allocatable CPU: one such pod fits, two never do."""
    node = harness.k8s.kubectl_json("a", "get", "node", "cairn-a-real")
    cpu = node["status"]["allocatable"]["cpu"]
    cores = int(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return round(cores * 0.75, 2)


def test_a_pod_that_fits_once_another_environments_stopping_pod_is_gone_waits_for_it(harness: K8sHarness) -> None:
    big_cpu = _most_of_the_node(harness)
    slow_stop = {"pre_stop": {"exec": {"command": ["sleep", "5"]}}, "termination_grace_period_s": 20}
    holder = harness.env("holder")
    big = harness.revision(holder, "v1", cpu=big_cpu, lifecycle=slow_stop)
    harness.ensure(holder, [0], big)
    harness.wait_ready(holder, 1)
    # The holder's replacement is small, so it fits beside its predecessor, which keeps its CPUs
    # while its PreStop runs: ensure returns without waiting for it.
    harness.ensure(holder, [0], harness.revision(holder, "v2", cpu=0.1, lifecycle=slow_stop))
    stopping = [p for p in harness.runtime.api.pods(holder.app, holder.environment) if p["metadata"].get("deletionTimestamp")]  # type: ignore[attr-defined]
    assert stopping, "the holder's predecessor was already gone: nothing would be holding the node"

    other = harness.env("waiter")
    began = time.monotonic()
    harness.ensure(other, [0], harness.revision(other, "v1", cpu=big_cpu))
    took = time.monotonic() - began
    waited = [e for e in harness.runtime.events(other) if e.reason == "FailedScheduling"]
    assert waited, f"the waiter's pod was never unschedulable (ensure took {took:.1f} s): the test did not test waiting"
    assert "Insufficient cpu" in waited[0].message
    harness.wait_ready(other, 1)


def test_a_pod_that_no_node_can_hold_fails_ensure_with_the_schedulers_reason(harness: K8sHarness) -> None:
    env = harness.env("toobig")
    began = time.monotonic()
    with pytest.raises(PermanentError) as caught:
        harness.ensure(env, [0, 1], harness.revision(env, "v1", cpu=64))
    took = time.monotonic() - began
    assert "Insufficient cpu" in str(caught.value) and "lower cpu/memory" in (caught.value.hint or "")
    assert took < 20, f"an impossible request took {took:.1f} s to fail"
    assert harness.runtime.observe(env) == [], "a pod that cannot start was left behind"
