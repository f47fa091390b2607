"""Basic auth for the Prefect API and UI that ``cairn up`` starts.

On loopback only local users reach the server, as with ``prefect server start``'s own default.
Once it listens beyond loopback anyone on the network could start, approve or cancel releases,
so the server requires Prefect's basic auth (``PREFECT_SERVER_API_AUTH_STRING``, checked by
the API for every route but ``/health`` and ``/ready``; the UI asks for it at login) and every
client of the platform sends it (``PREFECT_API_AUTH_STRING``): the worker and the flow runs it
starts, the CLI, the webhook receiver.

The string is ``user:password``. When none is configured, ``cairn up --host 0.0.0.0`` generates
one and keeps it in ``$CAIRN_HOME/api-auth`` (mode 0600), where cairn's own processes find it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from cairn.errors import ConfigError
from cairn.paths import cairn_home

SERVER_SETTING = "PREFECT_SERVER_API_AUTH_STRING"
CLIENT_SETTING = "PREFECT_API_AUTH_STRING"


def auth_file() -> Path:
    return cairn_home() / "api-auth"


def is_loopback(host: str) -> bool:
    if host in ("localhost", "::1"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything, so treat it as reachable


def _checked(value: str, where: str) -> str:
    user, sep, password = value.partition(":")
    if not sep or not user or len(password) < 12:
        raise ConfigError.single(where, "<hidden>", "an auth string is 'user:password' with a password of at least 12 characters")
    return value


def configured() -> str | None:
    """The auth string in force: the environment first (an operator's choice), then the stored one."""
    for name in (SERVER_SETTING, CLIENT_SETTING):
        if os.environ.get(name):
            return _checked(os.environ[name], name)
    try:
        stored = auth_file().read_text().strip()
    except FileNotFoundError:
        return None
    return _checked(stored, str(auth_file())) if stored else None


def ensure(host: str) -> str | None:
    """The auth string the server must require when it listens on ``host`` (None on loopback,
    unless one is configured anyway); generates and stores one for a non-loopback host."""
    current = configured()
    if current or is_loopback(host):
        return current
    value = f"cairn:{secrets.token_urlsafe(24)}"
    path = auth_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_EXCL with 0600: the secret is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def client_env() -> dict[str, str]:
    """Environment a client of the platform needs to authenticate (empty when no auth is in force)."""
    value = configured()
    return {CLIENT_SETTING: value} if value else {}

