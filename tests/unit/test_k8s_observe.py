"""Pods and events as the API returns them -> cairn's phases, reasons and events."""

from __future__ import annotations

from typing import Any

from cairn.runtime import Phase
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes.observe import classify, current, instance, sort_key, status_events, to_event

T0 = "2026-01-01T00:00:00Z"
NOW = 1767225600.0  # T0 as epoch seconds


def pod(app: dict[str, Any] | None = None, *, ready: str = "False", ready_changed: str = T0,
        annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    meta = {"name": "shop-production-1", "labels": {m.SLOT: "1"},
            "annotations": {m.DIGEST: "d" * 64, m.HEALTH_BUDGET: "3", **(annotations or {})}}
    containers = [{"name": "app", "ports": [{"containerPort": 8080}], "resources": {"limits": {"memory": "64Mi"}}}]
    conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": ready, "lastTransitionTime": ready_changed}]
    st: dict[str, Any] = {"podIP": "10.0.0.5", "conditions": conditions, **status}
    if app is not None:
        st["containerStatuses"] = [{"name": "app", "restartCount": 0, "ready": ready == "True", **app}]
    return {"metadata": meta, "spec": {"containers": containers}, "status": st}


def running(at: str = T0) -> dict[str, Any]:
    return {"state": {"running": {"startedAt": at}}}


def test_ready_pod_is_running_with_address_ports_and_start_time() -> None:
    p = pod(running(), ready="True", ready_changed="2026-01-01T00:00:02Z")
    i = instance(p, classify(p, NOW + 5))
    assert (i.phase, i.ready, i.address, i.ports, i.slot, i.revision, i.started_at) == (
        Phase.RUNNING, True, "10.0.0.5", {8080: 8080}, 1, "d" * 64, NOW)


def test_never_ready_within_the_budget_is_starting_then_failed_and_sticky() -> None:
    p = pod(running())
    assert classify(p, NOW + 2).phase is Phase.STARTING
    verdict = classify(p, NOW + 4)
    assert verdict.phase is Phase.FAILED and verdict.sticky and verdict.quote_probe and "3s" in (verdict.reason or "")
    marked = pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}}}, annotations={m.FAILED: "health check never passed"})
    assert classify(marked, NOW + 60) .phase is Phase.FAILED, "a restart after the verdict does not hide it"


def test_ready_then_failing_is_unhealthy_not_failed() -> None:
    p = pod(running(), ready="False", ready_changed="2026-01-01T00:00:20Z")
    assert classify(p, NOW + 30).phase is Phase.UNHEALTHY


def test_without_a_health_check_not_ready_means_post_start_is_running() -> None:
    p = pod(running(), annotations={})
    p["metadata"]["annotations"].pop(m.HEALTH_BUDGET)
    p["spec"]["containers"][0]["lifecycle"] = {"postStart": {"exec": {"command": ["true"]}}}
    assert classify(p, NOW + 60) == classify(p, NOW + 1)
    assert classify(p, NOW + 60).phase is Phase.STARTING and "PostStart" in (classify(p, NOW).reason or "")


def test_crash_loop_is_backoff_with_the_exit_and_oom_is_named() -> None:
    crashed = pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}}, "restartCount": 3,
                   "lastState": {"terminated": {"exitCode": 1, "message": "Traceback\nValueError: boom\n"}}})
    verdict = classify(crashed, NOW)
    assert verdict.phase is Phase.BACKOFF and verdict.reason == "Error: exited with code 1 (ValueError: boom)"
    assert instance(crashed, verdict).restarts == 3 and instance(crashed, verdict).exit_code == 1
    oom = pod({"state": {"waiting": {"reason": "CrashLoopBackOff"}},
               "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": T0}}})
    assert classify(oom, NOW).reason == "OOMKilled: used more than its memory limit of 64 MB (exit 137)"
    [event] = status_events(oom)
    assert (event.reason, event.type, event.time) == ("OOMKilled", "Warning", NOW) and "137" in event.message


def test_image_and_scheduling_problems() -> None:
    missing = pod({"state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image not present"}}},
                  annotations={m.IMAGE: "cairn/nope:v1"})
    verdict = classify(missing, NOW)
    assert verdict.phase is Phase.FAILED and "cairn/nope:v1" in (verdict.reason or "") and "ErrImageNeverPull" in (verdict.reason or "")
    missing_secret = pod({"state": {"waiting": {"reason": "CreateContainerConfigError",
                                                "message": 'secret "shop-production-v2" not found'}}})
    assert classify(missing_secret, NOW).phase is Phase.FAILED, "a configuration that cannot start fails at once"
    lagging = pod({"state": {"waiting": {"reason": "CreateContainerConfigError",
                                         "message": "failed to sync secret cache: timed out waiting for the condition"}}})
    assert classify(lagging, NOW).phase is Phase.PENDING, "the kubelet's own lag in syncing a new Secret is waited out"
    unschedulable = pod(None)
    unschedulable["status"]["conditions"][0] = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/3 nodes are available: 3 Insufficient cpu."}
    assert classify(unschedulable, NOW) .reason == "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu."
    deleting = pod(running())
    deleting["metadata"]["deletionTimestamp"] = T0
    assert classify(deleting, NOW).phase is Phase.TERMINATING


def test_events_map_reasons_enrich_post_start_and_sort_by_second_then_storage_order() -> None:
    failed_hook = pod({"state": {"running": {"startedAt": T0}},
                       "lastState": {"terminated": {"exitCode": 137, "message": "PostStart hook failed: exec [x] exited 7: hook-broke"}}})
    hook = {"involvedObject": {"name": "shop-production-1"}, "reason": "FailedPostStartHook", "message": "PostStartHook failed",
            "type": "Warning", "lastTimestamp": T0, "metadata": {"resourceVersion": "20"}}
    event = to_event(hook, {"shop-production-1": failed_hook})
    assert (event.reason, event.warning) == ("PostStartFailed", True) and "hook-broke" in event.message
    scheduled = {"eventTime": "2026-01-01T00:00:00.700000Z", "metadata": {"resourceVersion": "10"}}
    pulled = {"lastTimestamp": T0, "metadata": {"resourceVersion": "11"}}
    assert sorted([pulled, scheduled], key=sort_key) == [scheduled, pulled], "the scheduler's microseconds do not reorder a second"
    repeated = {**hook, "reason": "Unhealthy", "count": 5}
    assert to_event(repeated, {}).message.endswith("(x5)")


def slot_pod(name: str, created: str, *, deleting: bool = False, leaving: bool = False) -> dict[str, Any]:
    labels = {m.SLOT: "1", m.SERVING: "false" if leaving else "true"}
    meta: dict[str, Any] = {"name": name, "labels": labels, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return {"metadata": meta}


def test_the_slots_pod_is_neither_being_deleted_nor_leaving_the_service_else_the_newest() -> None:
    old, new = "2026-01-01T00:00:00Z", "2026-01-01T00:00:09Z"
    # (pods in the slot, the one that is the slot's)
    table = [
        ([slot_pod("a", old), slot_pod("b", new)], "b"),                       # two live: the newer
        ([slot_pod("a", new, leaving=True), slot_pod("b", old)], "b"),         # the drained one is on its way out, even if newer
        ([slot_pod("a", old), slot_pod("b", new, deleting=True)], "a"),        # a terminating one never wins over a live one
        ([slot_pod("a", old, deleting=True), slot_pod("b", new, deleting=True)], "b"),
        ([slot_pod("a", old, leaving=True)], "a"),                             # alone, a leaving pod is still the slot's
    ]
    for pods, expected in table:
        assert [p["metadata"]["name"] for p in current(pods)] == [expected], pods
        assert [p["metadata"]["name"] for p in current(pods[::-1])] == [expected], "order of the list does not matter"
