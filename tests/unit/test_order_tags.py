"""The tag vocabulary: what finds an order, and what reads its values back."""

from __future__ import annotations

from cairn.orders import tags


def test_a_kind_and_an_environment_are_four_tags() -> None:
    assert tags.for_kind("release", "shop", "test") == ["cairn", "kind:release", "app:shop", "env:test"]


def test_a_revision_is_named_by_32_digits_of_its_digest_and_its_cluster() -> None:
    assert tags.for_revision("a" * 64, "local-a") == ["rev:" + "a" * 32, "cluster:local-a"]


def test_a_value_is_read_back_by_its_prefix_and_missing_is_none() -> None:
    run_tags = [*tags.for_kind("rollback", "shop", "test"), tags.by("webhook:d-1")]
    assert tags.value(run_tags, tags.BY) == "webhook:d-1"
    assert tags.value(run_tags, tags.REV) is None


def test_only_releases_and_rollbacks_hold_an_environment() -> None:
    assert tags.holds_environment(tags.for_kind("release", "a", "test"))
    assert tags.holds_environment(tags.for_kind("rollback", "a", "test"))
    assert not tags.holds_environment(tags.for_kind("retry", "a", "test"))
    assert not tags.holds_environment(tags.for_kind("build", "a", "test"))


def test_a_build_is_found_by_its_app_alone() -> None:
    assert tags.for_kind("build", "shop") == ["cairn", "kind:build", "app:shop"]
