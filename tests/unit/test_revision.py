from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.configfile import load_file, validate
from cairn.errors import ConfigError
from cairn.revision import Revision

SPEC = load_file(Path(__file__).resolve().parents[2] / "examples" / "shop.yaml").apps[0].environments["production"]


def rev(version: str = "v1", **changes: object) -> Revision:
    spec = SPEC.model_copy(update=changes) if changes else SPEC
    return Revision(app="shop-api", environment="production", deploy_type="code-package", version=version, spec=spec)


def test_equal_inputs_give_equal_digests() -> None:
    assert rev().digest == rev().digest
    assert len(rev().digest) == 64 and rev().short == rev().digest[:12]


@pytest.mark.parametrize(
    "other",
    [
        lambda: rev("v2"),
        lambda: rev(instances=5),
        lambda: rev(env={"LOG_LEVEL": "debug"}),
        lambda: rev(memory_mb=512),
        lambda: Revision(app="shop-api", environment="test", deploy_type="code-package", version="v1", spec=SPEC),
    ],
)
def test_any_change_gives_a_new_digest(other) -> None:  # type: ignore[no-untyped-def]
    assert other().digest != rev().digest


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=8), max_size=4))
def test_digest_depends_on_content_not_key_order(env: dict[str, str]) -> None:
    forward = rev(env=dict(env))
    backward = rev(env=dict(reversed(list(env.items()))))
    assert forward.digest == backward.digest


def test_digest_survives_a_json_round_trip() -> None:
    original = rev()
    again = Revision.model_validate_json(original.model_dump_json())
    assert again.digest == original.digest


@pytest.mark.parametrize("version", ["", "v 2", "../etc", "-v2", "x" * 64])
def test_bad_versions_are_refused(version: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(Revision, {"app": "shop-api", "environment": "production", "deploy_type": "image", "version": version,
                            "spec": SPEC.model_dump()})
    assert info.value.problems[0][0] == "version"


def test_image_deploy_type_ships_the_version_as_tag() -> None:
    spec = SPEC.model_copy(update={"image": "cairn/demo-app:latest"})
    assert Revision(app="a", environment="test", deploy_type="image", version="v2", spec=spec).image == "cairn/demo-app:v2"
    assert rev().image == "cairn/python:3.11"
