"""Start a read now, take its answer later: API calls a flow needs at one point, overlapped with
other work on the way there (every call on the path between two batches is overhead: bench/RESULTS.md)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def in_background(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
    """``fn(*args, **kwargs)`` on its own thread, in the caller's context (the flow run's logger
    and API client go along). A daemon thread: a flow that fails before it takes the answer does
    not wait for it to exit."""
    future: Future[T] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(fn, *args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever takes the answer
            future.set_exception(exc)

    threading.Thread(target=run, name=f"cairn-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    return future


class OnDemand(Future[T]):
    """A read to start at a moment someone else notices (``start``, once; later calls do nothing),
    then taken like any future. The health wait starts the batch boundary's pause-mode read the
    moment it sees the batch healthy, before Prefect records the task's end (~10 ms of the
    flow's CPU, and the server's, that the read would otherwise queue behind)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        super().__init__()
        self._fn = fn
        self._started = threading.Lock()

    def start(self) -> None:
        if not self._started.acquire(blocking=False):
            return
        started = in_background(self._fn)
        started.add_done_callback(self._take)

    def _take(self, done: Future[T]) -> None:
        error = done.exception()
        if error is not None:
            self.set_exception(error)
        else:
            self.set_result(done.result())
