"""Which platform a ``cairn`` command talks to, found before Prefect is imported.

In order: ``--api URL``, ``$CAIRN_API_URL``, ``$PREFECT_API_URL``, else the server ``cairn up``
recorded in ``$CAIRN_HOME/platform.json``. The command's process then gets the platform's
environment (``processes.prefect_env``: its Prefect home, the auth string from
``$CAIRN_HOME/api-auth``, no telemetry), so a new shell needs nothing exported. There is no
fallback: with no API found, Prefect's client would start an *ephemeral* server with its own
database in the user's ``~/.prefect`` and store things where the platform never looks; instead
the command stops with one line saying how to start the platform.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from cairn.controlplane import processes
from cairn.errors import ConfigError, TemporaryError

SOURCES = ("CAIRN_API_URL", "PREFECT_API_URL")


def find_api(explicit: str | None = None) -> tuple[str, str] | None:
    """``(url, where it was found)``: the first of ``--api``, the variables, the state file."""
    if explicit:
        return explicit, "--api"
    for name in SOURCES:
        if os.environ.get(name):
            return os.environ[name], name
    recorded = processes.recorded_api()
    return (recorded, str(processes.state_file())) if recorded else None


def _shown(url: str) -> str:
    """The URL without any user:password in it (messages end up in logs)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _checked(url: str, source: str) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port out of range or not a number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError.single(source, _shown(url),
                                 "the platform's Prefect API as an http(s) URL, e.g. http://127.0.0.1:4200/api")
    return url.rstrip("/")


def connect(explicit: str | None = None) -> str:
    """Point this process at the platform (see the module's docstring) and return its API URL.

    Raises ``TemporaryError`` (exit 1) when none is found or none answers there; ``ConfigError``
    (exit 2) for a malformed URL or auth string."""
    found = find_api(explicit)
    if found is None:
        raise TemporaryError(f"no cairn platform is up (none recorded in {processes.state_file()}); "
                             "start it with `cairn up`, or name one with --api URL")
    url, source = _checked(*found), found[1]
    if not processes.healthy(url):
        raise TemporaryError(f"no cairn platform answers at {_shown(url)} (from {source}); "
                             "start it with `cairn up`, or name a running one with --api URL")
    from cairn.controlplane.lifecycle import point_here

    point_here(url)
    return url


def isolate() -> None:
    """For a command that needs no platform: whatever it imports of Prefect still stays in
    cairn's Prefect home, starts no ephemeral server and sends no telemetry."""
    os.environ.update(processes.isolation_env())
