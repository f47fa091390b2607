"""Basic auth for the Prefect server, on loopback as beyond it, and the private directories (no server needed)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cairn.controlplane import auth
from cairn.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "cairn"  # not there yet: cairn creates it
    monkeypatch.setenv("CAIRN_HOME", str(home))
    monkeypatch.delenv(auth.CLIENT_SETTING, raising=False)
    monkeypatch.delenv(auth.SERVER_SETTING, raising=False)
    return home


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True),
                                           ("0.0.0.0", False), ("::", False), ("10.1.2.3", False), ("my-host", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert auth.is_loopback(host) is loopback


def test_a_private_auth_string_is_generated_once_even_for_loopback(home: Path) -> None:
    value = auth.ensure()
    assert value and value.startswith("cairn:") and len(value.split(":", 1)[1]) >= 24
    assert stat.S_IMODE(auth.auth_file().stat().st_mode) == 0o600
    assert stat.S_IMODE(home.stat().st_mode) == 0o700, "the home holding it is its owner's alone"
    assert auth.ensure() == value, "reused, not regenerated"


def test_server_and_clients_get_the_same_string(home: Path) -> None:
    from cairn.controlplane.processes import prefect_env

    assert auth.SERVER_SETTING not in prefect_env()
    value = auth.ensure()
    env = prefect_env("http://127.0.0.1:1/api")
    assert env[auth.SERVER_SETTING] == env[auth.CLIENT_SETTING] == value


@pytest.mark.parametrize("mode,after", [
    pytest.param(0o755, 0o700, id="a home another user can enter is closed to them"),
    pytest.param(0o700, 0o700, id="a private home stays as it is"),
    pytest.param(0o1777, 0o1777, id="a sticky shared directory named by mistake is not cairn's to close"),
])
def test_private_dir_tightens_an_existing_directory(tmp_path: Path, mode: int, after: int) -> None:
    from cairn.paths import private_dir

    path = tmp_path / "home"
    path.mkdir()
    path.chmod(mode)
    private_dir(path)
    assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(after)


def test_private_dir_creates_missing_directories_0700(tmp_path: Path) -> None:
    from cairn.paths import private_dir

    path = private_dir(tmp_path / "a" / "home")
    assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(0o700)


def test_configured_string_wins_and_is_checked(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(auth.SERVER_SETTING, "ops:a-long-enough-password")
    assert auth.ensure() == "ops:a-long-enough-password"
    assert not auth.auth_file().exists()
    monkeypatch.setenv(auth.SERVER_SETTING, "no-colon-here")
    with pytest.raises(ConfigError):
        auth.configured()
    monkeypatch.setenv(auth.SERVER_SETTING, "ops:short")
    with pytest.raises(ConfigError):
        auth.ensure()
