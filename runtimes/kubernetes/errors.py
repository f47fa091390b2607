"""Kubernetes client errors -> cairn errors, with a hint, at the runtime's edge."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cairn.errors import CairnError, NotFound, PermanentError, TemporaryError

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    try:
        data = json.loads(body) if body else {}
        return str(data.get("message") or exc.reason)
    except (ValueError, TypeError):
        return str(getattr(exc, "reason", exc))


def translate(exc: BaseException, doing: str) -> CairnError:
    """One error from the client, as what a person can act on."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        status, message = exc.status or 0, _status_message(exc)
        if status == 403 and "exceeded quota" in message:
            return PermanentError(f"{doing}: resource quota exceeded: {message}",
                                  hint="raise the namespace's ResourceQuota or lower cpu/memory/instances")
        if status == 403 and "violates PodSecurity" in message:
            return PermanentError(f"{doing}: the namespace's Pod Security admission refused the pod: {message}",
                                  hint='under "restricted" set the environment\'s user: to a non-root uid (e.g. user: "1000:1000"), '
                                       "or ask the cluster's administrator for a namespace at the level the app needs")
        if status == 403:
            return PermanentError(f"{doing}: forbidden: {message}",
                                  hint="grant the kubeconfig's user RBAC on pods, secrets, configmaps and events in the namespace")
        if status == 401:
            return PermanentError(f"{doing}: unauthorized: {message}", hint="the kubeconfig's credentials were refused; renew them")
        if status == 404:
            return NotFound(f"{doing}: not found: {message}")
        if status == 422:
            return PermanentError(f"{doing}: the cluster refused the object: {message}", hint="check the environment's configuration")
        if status in RETRYABLE or status == 0:
            return TemporaryError(f"{doing}: the API server answered {status}: {message}", hint="retry; the cluster is busy or restarting")
        return PermanentError(f"{doing}: the API server answered {status}: {message}", hint="see the API server's message")
    if isinstance(exc, (HTTPError, OSError, TimeoutError)):
        return TemporaryError(f"{doing}: the Kubernetes API is not reachable ({type(exc).__name__})",
                              hint="check the cluster is up and the kubeconfig's server address")
    return PermanentError(f"{doing}: {type(exc).__name__}: {exc}", hint="see the error")


@contextmanager
def edge(doing: str) -> Iterator[None]:
    """Let cairn errors through; translate the client's."""
    try:
        yield
    except CairnError:
        raise
    except Exception as exc:
        raise translate(exc, doing) from exc
