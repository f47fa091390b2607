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
