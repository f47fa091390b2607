"""Prefect's dual functions, called from synchronous code.

Many of Prefect's functions (``run_deployment``, ``Flow.from_source``, ``RunInput.load``,
artifact creation, ...) run synchronously when called from synchronous code and return a
coroutine only in an event loop, so their declared type is ``T | Coroutine[..., T]``. cairn calls
them from synchronous code only: :func:`result` states that, checked at run time, so the type
checker knows the value without an ignore.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def result(value: T | Coroutine[Any, Any, T]) -> T:
    if isinstance(value, Coroutine):
        value.close()
        raise TypeError("a Prefect call returned a coroutine: it was made inside an event loop, where cairn never calls it")
    return value
