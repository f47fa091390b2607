"""Watching deleted pods until they are gone, and recording how each stopped.

A replaced pod is watched in the background: its replacement is created at once and `ensure`
returns without waiting for the old pod's PreStop and grace period (a Deployment does not wait
either). A terminated pod is watched in the foreground (`terminate` returns once it is gone).
Either way each stop is recorded once per process, as cairn's own `Stopped` (and `Killing`) Events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from cairn.errors import TemporaryError
from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes.api import Api, pool
from cairn.runtimes.kubernetes.informer import PodCaches

STOP_MARGIN_S = 30.0  # PreStop and SIGTERM share the grace period; the kubelet adds at most 2 s of SIGTERM

_RECORDING: set[str] = set()  # uids whose stop some watcher of this process records
_LOCK = threading.Lock()


class Stops:
    def __init__(self, api: Api, caches: PodCaches) -> None:
        self.api, self.caches = api, caches

    def wait_gone(self, pods: list[dict[str, Any]], *, why: str, began: float) -> None:
        """Until every pod in ``pods`` is gone (watched); TemporaryError when one outlives its grace period."""
        grace = max(int(p["spec"].get("terminationGracePeriodSeconds", 30)) for p in pods)
        uids = {p["metadata"]["uid"]: p for p in pods}
        with _LOCK:
            mine = set(uids) - _RECORDING
            _RECORDING.update(mine)
        last: dict[str, dict[str, Any]] = {}
        labels = pods[0]["metadata"]["labels"]
        slots = sorted({int(p["metadata"]["labels"][m.SLOT]) for p in pods})
        records = pool(len(pods))
        try:
            with records:
                for listed in self.caches.follow(labels[m.APP], labels[m.ENV], slots, time.monotonic() + grace + STOP_MARGIN_S):
                    alive = {p["metadata"]["uid"]: p for p in listed if p["metadata"]["uid"] in uids}
                    last.update(alive)
                    for uid in [u for u in uids if u not in alive]:
                        pod = uids.pop(uid)
                        if uid in mine:
                            records.submit(self._record, pod, last.get(uid), time.monotonic() - began, why)
                    if not uids:
                        return
        finally:
            with _LOCK:
                _RECORDING.difference_update(mine)
        raise TemporaryError(f"{len(uids)} pod(s) still stopping after {grace + STOP_MARGIN_S:g}s",
                             hint="the node may be unreachable; check `kubectl get pods` and the kubelet")

    def follow(self, pods: list[dict[str, Any]], *, why: str, began: float, then: Callable[[], None]) -> None:
        """``wait_gone`` in a thread of its own, then ``then`` (e.g. deleting what only they used).
        Not a daemon: a process that is done otherwise still finishes the records (bounded by the
        grace period)."""
        def run() -> None:
            try:
                self.wait_gone(pods, why=why, began=began)
                then()
            except Exception:  # noqa: BLE001 - best effort: the next ensure or terminate sees what is left
                pass

        threading.Thread(target=run, name="cairn-k8s-stops", daemon=False).start()

    def _record(self, pod: dict[str, Any], seen: dict[str, Any] | None, took: float, why: str) -> None:
        app: dict[str, Any] = next((c for c in ((seen or pod).get("status", {}).get("containerStatuses") or []) if c["name"] == m.CONTAINER), {})
        ended = (app.get("state") or {}).get("terminated") or {}
        code = ended.get("exitCode")
        said = f"exit code {code}" if code is not None else "exit code not reported"
        try:
            if code == 137:
                self.api.record(pod, "Killing", "grace period ran out: SIGKILL", warning=True)
            self.api.record(pod, "Stopped", f"Stopped container ({said}) {took:.1f}s after the stop began ({why})")
        except Exception:  # noqa: BLE001 - the stop happened; its record is best effort
            pass
