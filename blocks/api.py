"""The Prefect REST API over the standard library's http.client, for the reads a person waits on.

Importing Prefect costs ~1.3 s of CPU (its settings, client and schemas), more than a whole
`cairn release show` or `cairn instances` may take (under 500 ms: bench/RESULTS.md). These reads need a few
JSON documents, so they ask the server directly. The address and credentials are the ones
Prefect's own client would use: ``PREFECT_API_URL`` with ``PREFECT_API_AUTH_STRING`` (basic auth,
see ``cairn.controlplane.auth``) or ``PREFECT_API_KEY``; only when no URL is in the environment
(a Prefect profile holds it) are Prefect's settings imported to find them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode, urlsplit

import tenacity

from cairn.errors import NotFound, TemporaryError

TIMEOUT_S = 30.0
BUSY = frozenset({429, 503})


def _settings() -> tuple[str, str | None, str | None]:
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url, os.environ.get("PREFECT_API_AUTH_STRING"), os.environ.get("PREFECT_API_KEY")
    from prefect.settings import get_current_settings  # slow, and only without the environment variable

    api = get_current_settings().api
    if not api.url:
        raise TemporaryError("no Prefect API configured", hint="start the platform with `cairn up` and export PREFECT_API_URL")
    auth = api.auth_string.get_secret_value() if api.auth_string else None
    key = api.key.get_secret_value() if api.key else None
    return api.url, auth, key


class Api:
    """One kept-alive connection for all of a command's reads. The standard library's
    ``http.client``, not httpx: httpx's import and client (an SSL context even for plain HTTP)
    cost a quarter of a second, these reads a few milliseconds each."""

    def __init__(self, url: str, auth: str | None, key: str | None) -> None:
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.netloc = parts.netloc
        self.base = parts.path.rstrip("/") + "/"
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if auth:
            self.headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        elif key:
            self.headers["Authorization"] = f"Bearer {key}"
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            self._conn = cls(self.netloc, timeout=TIMEOUT_S)
        return self._conn

    def request(self, method: str, path: str, body: dict[str, Any] | None, what: str) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        status, text = _while_busy()(self._send, method, path, data)
        if status == 404:
            raise NotFound(f"no {what}")
        if status >= 400:
            raise TemporaryError(f"the Prefect API answered {status} reading {what}: {text[:200].decode(errors='replace')}")
        return json.loads(text) if text else None

    def _send(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        # A kept-alive connection the server closed meanwhile fails once: ask again on a new one.
        reconnecting = tenacity.Retrying(retry=tenacity.retry_if_exception_type((OSError, http.client.HTTPException)),
                                         stop=tenacity.stop_after_attempt(2), before_sleep=lambda _: self._drop(), reraise=True)
        with self._lock:
            try:
                return reconnecting(self._exchange, method, path, data)
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise TemporaryError(f"the Prefect API is unreachable ({exc})", hint="is the platform up? cairn status") from None

    def _exchange(self, method: str, path: str, data: bytes | None) -> tuple[int, bytes]:
        conn = self._connection()
        conn.request(method, self.base + path.lstrip("/"), body=data, headers=self.headers)
        response = conn.getresponse()
        return response.status, response.read()

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def _while_busy() -> tenacity.Retrying:
    """A busy server (SQLite takes one writer at a time) answers 503 or 429: ask again with the
    doubling, jittered back-off and retry count of Prefect's own client (PREFECT_CLIENT_MAX_RETRIES);
    the last answer is returned whatever it is."""
    retries = int(os.environ.get("PREFECT_CLIENT_MAX_RETRIES") or 5)
    return tenacity.Retrying(retry=tenacity.retry_if_result(lambda answer: answer[0] in BUSY),
                             wait=tenacity.wait_exponential(multiplier=2) + tenacity.wait_random(0, 1),
                             stop=tenacity.stop_after_attempt(retries + 1),
                             retry_error_callback=lambda state: state.outcome.result() if state.outcome else None)


@lru_cache(maxsize=1)
def client() -> Api:
    return Api(*_settings())


def get(path: str, what: str, **params: Any) -> Any:
    return client().request("GET", f"{path}?{urlencode(params)}" if params else path, None, what)


def post(path: str, body: dict[str, Any], what: str) -> Any:
    return client().request("POST", path, body, what)


def patch(path: str, body: dict[str, Any], what: str) -> Any:
    return client().request("PATCH", path, body, what)


def delete(path: str, what: str) -> Any:
    return client().request("DELETE", path, None, what)
