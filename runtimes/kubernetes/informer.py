"""An environment's pods as this process last heard of them: one list, then a watch.

A release reads every pod of its environment at each step (to plan the next one) and the pods of
a batch when it applies it. At 1,000 pods a list is 4 MB of JSON for the API server to write and
this process to parse, ~0.5 s a step on a busy 2-core machine. Controllers (the Deployment's,
Argo Rollouts') keep a watch-fed cache instead; so does cairn, per environment and process.

A cache is observed state, only older. Two rules keep it as good as a fresh read for deciding:

- **Read your writes.** ``ensure`` tells the cache what it created and deleted (``expect``); a
  read waits until the watch has shown those (a created pod's uid seen, a deleted one gone or
  marked deleted), so the next step never acts on a view from before the last batch. What others change
  arrives within the watch's latency (milliseconds), as it would between two fresh reads.
- **Waiting costs nothing.** ``follow`` hands out the pods of some slots again only once one of
  them changed (or a second passed): a health wait or an admission then needs no list and no
  watch of its own per batch, and wakes once per change of its own pods, not of all 1,000.
- **Never worse than a list.** The first read is a list. A cache that is not synced within
  ``SYNC_TIMEOUT_S``, whose watch failed, or that was idle for ``IDLE_S`` (its thread ends) is
  not used: the caller lists instead, and the next read starts a new cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from cairn.runtimes.kubernetes import manifests as m
from cairn.runtimes.kubernetes.api import Api, Expired

IDLE_S = 60.0  # a cache nobody read for this long stops watching
WATCH_S = 5.0  # one watch request's length: the idle check runs between them
SYNC_TIMEOUT_S = 10.0  # how long a read waits for the watch to show this process's own writes
TICK_S = 1.0  # ``follow`` hands out the pods at least this often, changed or not (some verdicts come with time)


class PodCache:
    def __init__(self, api: Api, app: str, environment: str) -> None:
        self.api, self.app, self.environment = api, app, environment
        self._pods: dict[str, dict[str, Any]] = {}  # uid -> pod
        self._by_slot: dict[str, dict[str, dict[str, Any]]] = {}  # slot label -> uid -> pod: a batch's read costs its size
        self._seen: set[str] = set()  # every uid the list or the watch showed (uids are never reused)
        self._created: set[str] = set()  # expected: uids of pods this process created
        self._deleted: set[str] = set()  # expected: uids of pods this process deleted
        self._cond = threading.Condition()
        self._tick = 0  # counts every change the watch brought
        self._changed: dict[str, int] = {}  # slot label -> the tick of its last change
        self._relisted = 0  # the tick of the last list: every slot may have changed then
        self._synced = False
        self._running = True
        self._used = time.monotonic()
        threading.Thread(target=self._run, name=f"cairn-k8s-pods-{app}-{environment}", daemon=True).start()

    @property
    def running(self) -> bool:
        return self._running

    def expect(self, *, created: Iterable[str] = (), deleted: Iterable[str] = ()) -> None:
        """This process created the pods with uids ``created`` and deleted those with uids ``deleted``."""
        with self._cond:
            self._created.update(created)
            self._deleted.update(deleted)

    def pods(self, slots: Iterable[int] | None = None) -> list[dict[str, Any]] | None:
        """The pods (of ``slots``), sorted by slot, once the watch shows this process's writes;
        ``None`` when the cache cannot say (the caller lists instead)."""
        with self._cond:
            self._used = time.monotonic()
            if not self._cond.wait_for(lambda: not self._running or (self._synced and self._caught_up()), SYNC_TIMEOUT_S):
                self._running = False  # not trusted any more: the thread ends, the next read starts anew
            if not self._running:
                return None
            self._created.clear()
            self._deleted.clear()
            if slots is None:
                found = list(self._pods.values())
            else:
                found = [p for s in {str(s) for s in slots} for p in self._by_slot.get(s, {}).values()]
        return sorted(found, key=lambda p: int(p["metadata"]["labels"].get(m.SLOT, "0")))

    def follow(self, slots: Iterable[int], until: float) -> Iterator[list[dict[str, Any]] | None]:
        """The pods of ``slots`` (as ``pods`` returns them) now, then again each time one of them
        changed, and at least every ``TICK_S``, until the monotonic deadline ``until``. ``None``
        once the cache cannot say: the caller follows them otherwise from there."""
        wanted = {str(s) for s in slots}
        seen = -1
        while True:
            with self._cond:
                def changed(since: int = seen) -> bool:
                    return not self._running or self._changed_since(since, wanted)

                self._cond.wait_for(changed, max(0.0, min(TICK_S, until - time.monotonic())))
                seen = self._tick
            found = self.pods(int(s) for s in wanted)
            yield found
            if found is None or time.monotonic() >= until:
                return

    def _changed_since(self, tick: int, slots: set[str]) -> bool:
        if self._relisted > tick:
            return True
        return any(self._changed.get(s, 0) > tick for s in slots)

    def _caught_up(self) -> bool:
        if not self._created <= self._seen:
            return False
        # Evaluated at every event while a read waits: it costs what this process wrote, not the environment's size.
        return not any(uid in self._pods and not self._pods[uid]["metadata"].get("deletionTimestamp") for uid in self._deleted)

    def _run(self) -> None:
        try:
            while self._wanted():
                listed, version = self.api._pods(self.app, self.environment, None)
                with self._cond:
                    self._pods = {p["metadata"]["uid"]: p for p in listed}
                    self._by_slot = {}
                    for p in listed:
                        self._by_slot.setdefault(_slot(p), {})[p["metadata"]["uid"]] = p
                    self._seen.update(self._pods)
                    self._synced = True
                    self._tick += 1
                    self._relisted = self._tick
                    self._cond.notify_all()
                try:
                    while self._wanted():
                        for kind, pod in self.api._watch_pods(self.app, self.environment, None, version, WATCH_S):
                            version = pod["metadata"]["resourceVersion"]
                            if kind != "BOOKMARK":
                                self._apply(kind, pod)
                except Expired:
                    continue  # too far behind: list again
        except Exception:  # noqa: BLE001 - a cache that fails is not used; readers list instead
            pass
        finally:
            with self._cond:
                self._running = False
                self._cond.notify_all()

    def _wanted(self) -> bool:
        with self._cond:
            return self._running and time.monotonic() - self._used < IDLE_S

    def _apply(self, kind: str, pod: dict[str, Any]) -> None:
        with self._cond:
            uid, slot = pod["metadata"]["uid"], _slot(pod)
            if kind == "DELETED":
                self._pods.pop(uid, None)
                self._by_slot.get(slot, {}).pop(uid, None)
            else:
                self._pods[uid] = pod
                self._by_slot.setdefault(slot, {})[uid] = pod
            self._seen.add(uid)
            self._tick += 1
            self._changed[slot] = self._tick
            self._cond.notify_all()


class PodCaches:
    """This process's pod caches, one per environment (started at its first read), and what a
    reader does when one cannot answer: a list, or a watch of its own."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._caches: dict[tuple[str, str], PodCache] = {}
        self._lock = threading.Lock()

    def of(self, app: str, environment: str) -> PodCache:
        with self._lock:
            cache = self._caches.get((app, environment))
            if cache is None or not cache.running:
                cache = self._caches[(app, environment)] = PodCache(self.api, app, environment)
            return cache

    def pods(self, app: str, environment: str, slots: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """The environment's pods (of ``slots``), sorted by slot, as ``PodCache.pods`` or a list says."""
        wanted = None if slots is None else sorted(set(slots))
        found = self.of(app, environment).pods(wanted)
        return self.api.pods(app, environment, slots=wanted) if found is None else found

    def follow(self, app: str, environment: str, slots: Iterable[int], until: float) -> Iterator[list[dict[str, Any]]]:
        """As ``PodCache.follow``, and from the first time the cache cannot say on, a watch of their own."""
        wanted = sorted(set(slots))
        for found in self.of(app, environment).follow(wanted, until):
            if found is None:
                yield from self.api.follow_pods(app, environment, slots=wanted, until=until)
                return
            yield found

    def expect_deleted(self, pods: Iterable[dict[str, Any]]) -> None:
        """This process deleted ``pods`` (of any environments): those environments' caches, where
        one runs, wait to see it."""
        by_env: dict[tuple[str, str], list[str]] = {}
        for p in pods:
            labels = p["metadata"]["labels"]
            by_env.setdefault((labels[m.APP], labels[m.ENV]), []).append(p["metadata"]["uid"])
        for key, uids in by_env.items():
            with self._lock:
                cache = self._caches.get(key)
            if cache is not None:
                cache.expect(deleted=uids)


def _slot(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"].get(m.SLOT, ""))
