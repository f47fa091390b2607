"""Admission: the moments between creating a pod and its container starting, where a pod that
cannot start is told apart from one that is merely slow, so ``ensure`` fails with the cluster's
reason (an image that is not there, no room on any node, a host path that cannot be mounted)
instead of a health wait running out minutes later.

No room is the subtle one. Pods being deleted hold their node's resources until they are gone,
and the scheduler retries a pod that did not fit once they are: so Unschedulable is a verdict
only when nothing has been freeing room for RESCHEDULE_S, and at once when nothing was (a request
no node can hold fails in about a second, as users of ``kubectl describe`` would read it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

from cairn.revision import Revision
from cairn.runtime import Phase
from cairn.runtimes.kubernetes.api import Api
from cairn.runtimes.kubernetes.informer import PodCache
from cairn.runtimes.kubernetes.observe import classify

ADMIT_TIMEOUT_S = 60.0
MOUNT_CHECK_S = 0.5  # how often admission looks for FailedMount events while pods wait for volumes
RESTORE_AFTER_S = 1.0  # a pod recreated after a stray delete shows up in the watch well within this
# The scheduler retries an unschedulable pod when a pod is deleted, after a back-off of up to 10 s:
# so long after room was last being freed, Unschedulable is still the scheduler's stale word.
RESCHEDULE_S = 10.0


def admit(api: Api, cache: PodCache, following: Iterator[list[dict[str, Any]]], new: dict[int, dict[str, Any]],
          revision: Revision) -> dict[str, str]:
    """Wait until each of the ``new`` pods (by slot, just created) is past scheduling, volumes and
    image resolution; returns the pods that cannot start, by name, with the cluster's reason.
    Readiness is not waited for (that is observe's). ``following`` hands out the new pods' slots'
    pods after each change, until ADMIT_TIMEOUT_S passes: watched, not polled."""
    pending = {p["metadata"]["name"]: p for p in new.values()}
    names = set(pending)
    problems: dict[str, str] = {}
    restored: dict[str, float] = {}
    looked: dict[str, tuple[str, int]] = {}
    unschedulable: dict[str, str] = {}  # pending pods the scheduler last found no room for, and why
    mounts_checked = time.monotonic()
    freed = looked_around = float("-inf")

    def room_coming(now: float) -> bool:
        nonlocal freed, looked_around
        if now - looked_around >= 1.0:
            looked_around = now
            if api.any_pod_stopping():
                freed = now
        return now - freed < RESCHEDULE_S

    for listed in following:
        now = time.monotonic()
        # Room is being freed while predecessors are still there (being deleted, or about to be)
        # or, looked for once a pod is found unschedulable, any pod of the namespace is stopping.
        if any(p["metadata"]["name"] not in names for p in listed):
            freed = now
        for name in set(pending) - {p["metadata"]["name"] for p in listed}:
            # Deleted by someone else before it started (a stale delete of its predecessor's
            # name, as kwok sends): the slot is still ours to fill.
            if now - restored.get(name, 0.0) > RESTORE_AFTER_S:
                restored[name] = now
                cache.expect(created=[api.create_pod(pending[name])])
        for pod in listed:
            name = pod["metadata"]["name"]
            # A batch of 100 brings ~100 watch events, each a view of all 100 pods: a pod is
            # looked at again when it changed, or once a second (some verdicts come with time).
            judged = (pod["metadata"]["resourceVersion"], int(now))
            if name not in pending or looked.get(name) == judged:
                continue
            looked[name] = judged
            verdict = classify(pod, time.time())
            unschedulable.pop(name, None)
            if (verdict.reason or "").startswith("Unschedulable"):
                unschedulable[name] = verdict.reason or ""
            # A health verdict (quote_probe) is observe's to give, with what the check got: the pod
            # itself started, so admission is done with it.
            if verdict.phase is Phase.FAILED and not verdict.quote_probe or name in unschedulable and not room_coming(now):
                problems[name] = verdict.reason or "failed"
                pending.pop(name)
            elif verdict.phase is not Phase.PENDING or verdict.reason == "unpacking the code package" and _init_started(pod):
                pending.pop(name)
        # A host path fails to mount in seconds, not milliseconds, and only pods with host
        # paths can fail so: the events list (the namespace's, filtered by the API server) is
        # costly once it holds thousands of events.
        if pending and revision.spec.dirs and now - mounts_checked > MOUNT_CHECK_S:
            mounts_checked = now
            for event in api.events(reason="FailedMount"):
                name = event["involvedObject"]["name"]
                said = event.get("message", "")
                found = re.search(r'volume "dir-(\d+)"', said)
                if name in pending and found:
                    d = revision.spec.dirs[int(found.group(1))]
                    problems[name] = f"dirs[{found.group(1)}]: host path {d.host_path} for {d.path} cannot be mounted: {said}"
                    pending.pop(name)
        if not pending:
            break
    # Room freed for a whole minute and still none for these: the scheduler's word stands.
    problems.update({name: why for name, why in unschedulable.items() if name in pending})
    return problems


def _init_started(pod: dict[str, Any]) -> bool:
    return any("running" in (c.get("state") or {}) for c in pod.get("status", {}).get("initContainerStatuses") or [])


def hint(reason: str) -> str:
    """What the user can do about a reason ``admit`` returned."""
    if "image" in reason and "not present" in reason:
        return ("push the image to a registry the nodes pull from (python -m cairn.images.build --push REGISTRY for "
                "the project's own) and check that image: names it, registry host included")
    if reason.startswith("Unschedulable"):
        return "lower cpu/memory, add nodes, or fix the namespace's pod defaults (nodeSelector, tolerations)"
    if "host path" in reason:
        return "pick a host_path the kubelet can create as a directory on the node"
    return "fix the environment's configuration, then release again"
