"""The property of ``cairn apply`` against a real Prefect server: whatever random hostile mutation
of examples/shop.yaml it is given (tests/hostile.py), it exits 0 or 2, never with a traceback,
and a refusal (2) stores nothing. A modest number of examples: each is one `cairn` process.
The unit test of the same mutations (tests/unit/test_hostile_input.py) runs hundreds against the
validation entry point alone."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.hostile import mutated_example
from tests.test_cli_config import stored

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
PREFIX = f"prop{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def db_secret(prefect_server: str) -> None:
    from cairn.blocks.store import set_secret

    set_secret("shop-db-password", "s3cr3t-value-xyz")  # the example's secret_env names it: a good file must pass


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(text=mutated_example(rename=PREFIX), name=st.uuids())
def test_apply_of_a_mutated_example_exits_0_or_2_and_a_refusal_stores_nothing(  # type: ignore[no-untyped-def]
        cli, db_secret: None, tmp_path_factory: pytest.TempPathFactory, text: str, name: uuid.UUID) -> None:
    path = Path(tmp_path_factory.mktemp("prop")) / f"{name}.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    before = stored(cli)
    proc = cli("apply", "-f", str(path))
    assert proc.returncode in (0, 2), f"exit {proc.returncode}\n{text}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    if proc.returncode == 2:
        assert "error:" in proc.stderr and stored(cli) == before, (text, proc.stderr)


def test_a_bad_name_is_2_and_a_missing_one_is_3(cli) -> None:  # type: ignore[no-untyped-def]
    missing = cli("env", "show", f"{PREFIX}-nothing", "production")
    assert missing.returncode == 3 and f"{PREFIX}-nothing" in missing.stderr, missing.stderr
    bad = cli("env", "show", f"{PREFIX} nothing", "production")
    assert bad.returncode == 2 and "Invalid value for 'APP'" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_a_stored_cluster_roots_judge_a_later_file(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """apply reads a stored cluster whole: a file naming it alone is held to its allowed_host_paths."""
    import yaml

    allowed = tmp_path / "allowed"
    cluster_file = tmp_path / "clusters.yaml"
    cluster_file.write_text(yaml.safe_dump({"clusters": [{"name": f"{PREFIX}-c1", "allowed_host_paths": [str(allowed)]},
                                                         {"name": f"{PREFIX}-c2"}]}))
    cli("apply", "-f", str(cluster_file), check=True)

    def app_file(host_path: Path) -> Path:
        env = {"cluster": f"{PREFIX}-c1", "image": "cairn/python:3.11", "instances": 2, "cpu": 0.1, "memory_mb": 64,
               "dirs": [{"path": "/data", "host_path": str(host_path)}]}
        path = tmp_path / f"app-{host_path.name}.yaml"
        path.write_text(yaml.safe_dump({"apps": [{"name": f"{PREFIX}-{host_path.name}", "environments": {"production": env}}]}))
        return path

    before = stored(cli)
    outside = cli("apply", "-f", str(app_file(tmp_path / "outside")))
    assert outside.returncode == 2, outside.stderr
    assert "production.dirs[0].host_path" in outside.stderr and "not under an allowed root" in outside.stderr, outside.stderr
    assert stored(cli) == before
    inside = cli("apply", "-f", str(app_file(allowed / "inside")))
    assert inside.returncode == 0, inside.stderr
