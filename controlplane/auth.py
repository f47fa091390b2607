"""Basic auth for the Prefect API and UI that ``cairn up`` starts, on loopback too.

Whoever reaches the API can create flow runs, and the worker runs them as its own user (root on
a node): a local user, a container on the host network or a browser page doing requests to
127.0.0.1 would otherwise be one flow run away from any command. So the server always requires
Prefect's basic auth (``PREFECT_SERVER_API_AUTH_STRING``, checked by the API for every route but
``/health`` and ``/ready``; the UI asks for it at login) and every client of the platform sends
it (``PREFECT_API_AUTH_STRING``): the worker and the flow runs it starts, the CLI, the webhook
receiver, the tests' session.

The string is ``user:password``. When none is configured, ``cairn up`` generates one and keeps
it in ``$CAIRN_HOME/api-auth`` (mode 0600), where cairn's own processes find it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path

from cairn.errors import ConfigError
from cairn.paths import cairn_home, private_dir

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


def ensure() -> str:
    """The auth string the server requires: the configured one, else one generated and stored."""
    current = configured()
    if current:
        return current
    value = f"cairn:{secrets.token_urlsafe(24)}"
    path = auth_file()
    private_dir(path.parent)
    # O_EXCL with 0600: the secret is never readable by others, not even for an instant.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # a racing `cairn up` stored one first: use that one
        return _checked(path.read_text().strip(), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value

