"""Basic auth for a Prefect server that listens beyond loopback (no server needed)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cairn.controlplane import auth
from cairn.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path))
    monkeypatch.delenv(auth.CLIENT_SETTING, raising=False)
    monkeypatch.delenv(auth.SERVER_SETTING, raising=False)
    return tmp_path


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
                                           ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("my-host", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback


def test_loopback_needs_no_auth(home: Path) -> None:
    assert auth.ensure("127.0.0.1") is None
    assert not auth.auth_file().exists()


def test_beyond_loopback_generates_a_private_auth_string_once(home: Path) -> None:
    value = auth.ensure("0.0.0.0")
    assert value and value.startswith("cairn:") and len(value.split(":", 1)[1]) >= 24
    assert stat.S_IMODE(auth.auth_file().stat().st_mode) == 0o600
    assert auth.ensure("0.0.0.0") == value, "reused, not regenerated"
    assert auth.client_env() == {auth.CLIENT_SETTING: value}


def test_server_and_clients_get_the_same_string(home: Path) -> None:
    from cairn.controlplane.processes import prefect_env

    assert auth.SERVER_SETTING not in prefect_env()
    value = auth.ensure("0.0.0.0")
    env = prefect_env("http://127.0.0.1:1/api")
    assert env[auth.SERVER_SETTING] == env[auth.CLIENT_SETTING] == value


def test_configured_string_wins_and_is_checked(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.SERVER_SETTING, "ops:a-long-enough-password")
    assert auth.ensure("0.0.0.0") == "ops:a-long-enough-password"
    assert not auth.auth_file().exists()
    monkeypatch.setenv(auth.SERVER_SETTING, "no-colon-here")
    with pytest.raises(ConfigError):
        auth.configured()
    monkeypatch.setenv(auth.SERVER_SETTING, "ops:short")
    with pytest.raises(ConfigError):
        auth.ensure("0.0.0.0")
