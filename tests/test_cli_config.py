"""``cairn apply``, ``app list``, ``env show``, ``secret set`` and ``release create --dry-run``
against a real Prefect server: bad input is refused with exit 2 and stores nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import OciImages

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "shop.yaml"
pytestmark = pytest.mark.prefect


def stored(cli) -> dict:  # type: ignore[no-untyped-def]
    """Every cairn block document name, by type: what 'nothing was stored' is checked against."""
    from cairn.blocks.models import AppBlock, ClusterBlock, EnvironmentBlock
    from cairn.blocks.store import list_block_names

    return {t.__name__: list_block_names(t) for t in (ClusterBlock, AppBlock, EnvironmentBlock)}


@pytest.fixture
def secret(cli) -> str:  # type: ignore[no-untyped-def]
    cli("secret", "set", "shop-db-password", input="s3cr3t-value-xyz\n", check=True)
    return "s3cr3t-value-xyz"


def test_apply_example_then_again_changes_nothing(cli, secret: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    first = cli("apply", "-f", str(EXAMPLE), "--json", check=True)
    assert {(c["kind"], c["name"]) for c in json.loads(first.stdout)} >= {("app", "shop-api"), ("environment", "shop-api-test")}
    second = json.loads(cli("apply", "-f", str(EXAMPLE), "--json", check=True).stdout)
    assert {c["action"] for c in second} == {"unchanged"}

    changed = yaml.safe_load(EXAMPLE.read_text())
    changed["apps"][0]["environments"]["test"]["env"]["LOG_LEVEL"] = "warning"
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(changed))
    third = {c["name"]: c["action"] for c in json.loads(cli("apply", "-f", str(path), "--json", check=True).stdout)}
    assert third["shop-api-test"] == "updated" and third["shop-api-production"] == "unchanged"
    cli("apply", "-f", str(EXAMPLE), check=True)

    listed = json.loads(cli("app", "list", "--json", check=True).stdout)
    assert [a["name"] for a in listed if a["name"] == "shop-api"] == ["shop-api"]
    shown = json.loads(cli("env", "show", "shop-api", "production", "--json", check=True).stdout)
    assert shown["spec"]["instances"] == 4
    assert shown["spec"]["secret_env"] == {"DB_PASSWORD": "shop-db-password"}
    assert secret not in first.stdout + first.stderr + json.dumps(shown)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["apps"][0]["environments"]["test"].update(cluster=d["apps"][0]["environments"]["production"]["cluster"]),
         "apps[shop-api].environments.test.cluster"),
        (lambda d: d["apps"][0]["environments"]["production"].update(instances=1), "apps[shop-api].environments.production.instances"),
        (lambda d: d["apps"][0]["environments"]["production"].update(cluster="nowhere"), "apps[shop-api].environments.production.cluster"),
        (lambda d: d["apps"][0]["environments"]["production"]["secret_env"].update(API_KEY="missing-secret"),
         "apps[shop-api].environments.production.secret_env.API_KEY"),
        (lambda d: d["apps"][0].update(nmae="x"), "apps[shop-api].nmae"),
    ],
    ids=["same-cluster", "one-instance", "unknown-cluster", "missing-secret", "typo"],
)
def test_bad_file_exits_2_names_the_field_and_stores_nothing(cli, secret: str, tmp_path: Path, mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    data = yaml.safe_load(EXAMPLE.read_text())
    for cluster in data["clusters"]:
        cluster["name"] = cluster["name"].replace("local", "fresh")
    for env in data["apps"][0]["environments"].values():
        env["cluster"] = env["cluster"].replace("local", "fresh")
    data["apps"][0]["name"] = "fresh-app"
    mutate(data)
    field = field.replace("shop-api", "fresh-app").replace("local-a", "fresh-a")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    before = stored(cli)
    proc = cli("apply", "-f", str(path))
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr
    assert stored(cli) == before
    assert not any("fresh" in name for names in stored(cli).values() for name in names)


def test_dry_run_prints_the_plan_and_creates_nothing(cli, secret: str, tmp_path: Path, oci_images: OciImages) -> None:  # type: ignore[no-untyped-def]
    cli("apply", "-f", str(EXAMPLE), check=True)
    # A dry run checks what the order would: a version of a code-package app must be packed first.
    missing = cli("release", "create", "shop-api", "production", "--version", "never-packed", "--dry-run")
    assert missing.returncode == 3 and "no code package 'never-packed'" in missing.stderr
    (tmp_path / "app.py").write_text("print('v2')\n")
    cli("package", "add", "shop-api", "v2", str(tmp_path), check=True)
    proc = cli("release", "create", "shop-api", "production", "--version", "v2", "--batches", "3", "--dry-run", "--json", check=True)
    plan = json.loads(proc.stdout)
    assert [b["size"] for b in plan["batches"]] == [1, 1, 2]
    assert plan["batches"][0] == {"index": 1, "size": 1, "slots": [0], "instances": ["shop-api-production-0"], "pause_after": True}
    # The example's short cairn/python:3.11, qualified with the session's registry and pinned.
    assert plan["image"] == oci_images.ref("cairn/python:3.11")
    # Nothing completed ran here yet: every field is new, and secret references are never named.
    changes = {c["field"]: c for c in plan["changes"]["fields"]}
    assert plan["changes"]["against"] is None and changes["version"]["summary"] == "(none) -> v2"
    assert changes["spec.secret_env.DB_PASSWORD"] == {"field": "spec.secret_env.DB_PASSWORD", "old": None, "new": None,
                                                      "secret": "added", "summary": "secret reference added"}
    assert "shop-db-password" not in proc.stdout
    shown = cli("release", "create", "shop-api", "production", "--version", "v2", "--dry-run", check=True)
    assert f"image: {oci_images.ref('cairn/python:3.11')}" in shown.stdout
    refused = cli("release", "create", "shop-api", "production", "--version", "v2", "--batches", "5", "--dry-run")
    assert refused.returncode == 2 and "batches" in refused.stderr


def test_secret_value_is_never_taken_from_the_command_line(cli) -> None:  # type: ignore[no-untyped-def]
    proc = cli("secret", "set", "some-secret", "hunter2")
    assert proc.returncode != 0
    empty = cli("secret", "set", "some-secret", input="")
    assert empty.returncode == 2 and "empty" in empty.stderr
