"""The environment's ``user`` and ``read_only_root`` fields: their spellings, their refusals, and
revisions stored before them keeping their digests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cairn.config import EnvironmentSpec
from cairn.configfile import load_data
from cairn.errors import ConfigError
from cairn.revision import Revision

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "shop.yaml"
FIELD = "apps[shop-api].environments.production"


def load_with(**fields: Any) -> EnvironmentSpec:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["apps"][0]["environments"]["production"].update(copy.deepcopy(fields))
    return load_data(data, known_clusters=[]).apps[0].environments["production"]


@pytest.mark.parametrize(("written", "uid", "gid"), [
    pytest.param("1000:1001", 1000, 1001, id="UID:GID as text gives both ids"),
    pytest.param("1000", 1000, 1000, id="a UID alone as text gives that uid as the gid too"),
    pytest.param(1000, 1000, 1000, id="a number is the uid and the gid"),
    pytest.param({"uid": 1000, "gid": 1001}, 1000, 1001, id="a mapping of uid and gid is taken as written"),
    pytest.param({"uid": 1000}, 1000, 1000, id="a mapping without gid takes the uid as the gid"),
    pytest.param("0:0", 0, 0, id="root may be written out"),
    pytest.param(str(2**31 - 1), 2**31 - 1, 2**31 - 1, id="the largest id a pod's runAsUser takes is accepted"),
])
def test_a_user_is_accepted_in_each_spelling(written: Any, uid: int, gid: int) -> None:
    user = load_with(user=written).user
    assert user is not None and (user.uid, user.gid) == (uid, gid)


@pytest.mark.parametrize(("written", "field", "fix"), [
    pytest.param("1000:1000\n", "user", '"UID" or "UID:GID"', id="a trailing newline is refused, not matched away"),
    pytest.param(" 1000", "user", '"UID" or "UID:GID"', id="a leading space is refused"),
    pytest.param("app", "user", "in numbers", id="a user name is refused: pods take numeric ids"),
    pytest.param("-1", "user", '"UID" or "UID:GID"', id="a negative id as text is refused"),
    pytest.param("1000:", "user", '"UID" or "UID:GID"', id="a colon without a gid is refused"),
    pytest.param("1000:1000:5", "user", '"UID" or "UID:GID"', id="a third part is refused"),
    pytest.param("١٠٠٠", "user", '"UID" or "UID:GID"', id="non-ASCII digits are refused"),
    pytest.param("9" * 11, "user", '"UID" or "UID:GID"', id="more than ten digits is refused before any int()"),
    pytest.param(str(2**31), "user.uid", "at most 2147483647", id="a uid past a pod's range is refused"),
    pytest.param("1000:4294967296", "user.gid", "at most 2147483647", id="a gid past the range is refused"),
    pytest.param(-1, "user.uid", "at least 0", id="a negative number is refused"),
    pytest.param(1000.0, "user", "must be a mapping", id="a float is refused: ids are whole numbers"),
    pytest.param(float("inf"), "user", "must be a mapping", id="infinity is refused"),
    pytest.param(True, "user", "must be a mapping", id="a boolean is not a uid"),
    pytest.param({"uid": "1000"}, "user.uid", "whole number", id="a uid as text inside a mapping is refused"),
    pytest.param({"uid": 1000, "gid": float("nan")}, "user.gid", "whole number", id="a NaN gid is refused"),
    pytest.param({"uid": 1000, "group": 5}, "user.group", "unknown key", id="an unknown key in the mapping is refused"),
])
def test_a_bad_user_is_refused_naming_the_field(written: Any, field: str, fix: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_with(user=written)
    # A uid written alone is also the gid, so a bad one may be reported for both ids.
    said = {where: fix for where, _, fix in caught.value.problems}
    assert fix in said.get(f"{FIELD}.{field}", ""), said
    assert all(where.startswith(f"{FIELD}.user") for where in said), said
    assert caught.value.exit_code == 2


@pytest.mark.parametrize(("written", "ok"), [
    pytest.param(True, True, id="true makes the root filesystem read-only"),
    pytest.param(False, True, id="false is the default"),
    pytest.param("yes", False, id="text is refused, not read as a boolean"),
    pytest.param(1, False, id="a number is refused, not read as a boolean"),
])
def test_read_only_root_is_a_strict_boolean(written: Any, ok: bool) -> None:
    if ok:
        assert load_with(read_only_root=written).read_only_root is written
        return
    with pytest.raises(ConfigError) as caught:
        load_with(read_only_root=written)
    assert caught.value.problems[0][:1] == (f"{FIELD}.read_only_root",) and "true or false" in caught.value.problems[0][2]


def _revision(**fields: Any) -> Revision:
    return Revision(app="shop", environment="production", deploy_type="image", version="v1",
                    spec=load_with(**fields))


def test_a_revision_stored_before_the_fields_keeps_its_digest() -> None:
    old = _revision()
    body = old.model_dump(mode="json")
    for name in ("user", "read_only_root"):
        del body["spec"][name]  # what a revision stored before the fields holds
    assert Revision.model_validate(body).digest == old.digest == _revision(read_only_root=False).digest


@pytest.mark.parametrize("fields", [
    pytest.param({"read_only_root": True}, id="a read-only root is another revision"),
    pytest.param({"user": "1000"}, id="a user is another revision"),
])
def test_setting_a_field_changes_the_digest(fields: dict[str, Any]) -> None:
    assert _revision(**fields).digest != _revision().digest


def test_one_user_spelled_two_ways_is_one_revision() -> None:
    assert _revision(user="1000").digest == _revision(user={"uid": 1000, "gid": 1000}).digest
