"""The diff an order shows before it ships: one named case per kind of change (cairn.diff)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.config import DirMount, FileMount, PortMapping
from cairn.diff import markdown, revision_changes
from cairn.revision import Revision
from tests.unit.test_revision import SPEC

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def image_rev(version: str = "v1", image_digest: str | None = DIGEST_A, **changes: Any) -> Revision:
    spec = SPEC.model_copy(update=changes) if changes else SPEC
    return Revision(app="shop-api", environment="production", deploy_type="image", version=version, spec=spec,
                    image_digest=image_digest)


def summaries(old: Revision | None, new: Revision) -> dict[str, str]:
    return {c.field: c.summary for c in revision_changes(old, new)}


@pytest.mark.parametrize(("new", "expected"), [
    pytest.param(image_rev("v2", DIGEST_B), {"version": "v1 -> v2",
                                             "image": f"cairn/python:v1@{DIGEST_A} -> cairn/python:v2@{DIGEST_B}"},
                 id="a new version shows the version and the pinned image, old -> new"),
    pytest.param(image_rev("v1", DIGEST_B), {"image": f"cairn/python:v1@{DIGEST_A} -> cairn/python:v1@{DIGEST_B}"},
                 id="a tag that moved to other bytes shows as an image change under the same version"),
    pytest.param(image_rev(env={**SPEC.env, "LOG_LEVEL": "debug"}), {"spec.env.LOG_LEVEL": "info -> debug"},
                 id="a changed variable shows its old and new value"),
    pytest.param(image_rev(env={**SPEC.env, "NEW_FLAG": "1"}), {"spec.env.NEW_FLAG": "(none) -> 1"},
                 id="an added variable shows as none -> its value"),
    pytest.param(image_rev(secret_env={"DB_PASSWORD": "shop-db-password-2"}), {"spec.secret_env.DB_PASSWORD": "secret reference changed"},
                 id="a secret reference that changed says so without naming either secret"),
    pytest.param(image_rev(secret_env={**SPEC.secret_env, "API_KEY": "shop-api-key"}), {"spec.secret_env.API_KEY": "secret reference added"},
                 id="an added secret reference says added without naming it"),
    pytest.param(image_rev(secret_env={}), {"spec.secret_env.DB_PASSWORD": "secret reference removed"},
                 id="a removed secret reference says removed"),
    pytest.param(image_rev(image_pull_secret="registry-login"), {"spec.image_pull_secret": "secret reference added"},
                 id="the image pull secret is a secret reference too"),
    pytest.param(image_rev(ports=[PortMapping(container_port=8080, host_port=18081)]), {"spec.ports[0].host_port": "18080 -> 18081"},
                 id="a changed port shows the field of the mapping that changed"),
    pytest.param(image_rev(dirs=[DirMount(path="/acs/logs", host_path="/tmp/cairn-demo/other")]),
                 {"spec.dirs[0].host_path": "/tmp/cairn-demo/shop-api/production/logs -> /tmp/cairn-demo/other"},
                 id="a changed directory mount shows its host path old -> new"),
    pytest.param(image_rev(instances=6), {"spec.instances": "4 -> 6"},
                 id="the instance count change is shown"),
    pytest.param(image_rev(), {}, id="the same revision changes nothing"),
])
def test_each_kind_of_change(new: Revision, expected: dict[str, str]) -> None:
    assert summaries(image_rev(), new) == expected


def test_a_long_file_content_is_shown_by_size_and_digest_not_spelled_out() -> None:
    content = "secret-looking=" + "x" * 500 + "\n"
    shown = summaries(image_rev(), image_rev(files=[FileMount(path="/etc/shop/app.conf", content=content)]))
    assert list(shown) == ["spec.files[0].content"]
    assert "xxxx" not in shown["spec.files[0].content"] and "bytes, sha256" in shown["spec.files[0].content"]


def test_the_first_order_of_an_environment_shows_everything_as_new() -> None:
    shown = summaries(None, image_rev())
    assert shown["version"] == "(none) -> v1" and shown["spec.instances"] == "(none) -> 4"
    assert shown["spec.secret_env.DB_PASSWORD"] == "secret reference added"


def test_no_secret_reference_name_reaches_the_markdown() -> None:
    old, new = image_rev(), image_rev(secret_env={"DB_PASSWORD": "rotated-db-password"}, image_pull_secret="registry-login")
    text = markdown(revision_changes(old, new), old)
    assert "shop-db-password" not in text and "rotated-db-password" not in text and "registry-login" not in text
    assert "secret reference changed" in text and old.short in text


def test_a_value_cannot_break_out_of_its_markdown_cell() -> None:
    text = markdown(revision_changes(image_rev(), image_rev(env={**SPEC.env, "X": "a|b`c"})), image_rev())
    assert "| `spec.env.X` | (none) -> a\\|b'c |" in text


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=8), max_size=4),
       st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,8}", fullmatch=True), st.text(max_size=8), max_size=4))
def test_a_diff_is_empty_exactly_when_the_digests_agree(a: dict[str, str], b: dict[str, str]) -> None:
    old, new = image_rev(env=a), image_rev(env=b)
    assert (revision_changes(old, new) == []) == (old.digest == new.digest)
