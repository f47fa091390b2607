"""Image references in configuration and revisions: the grammar, short names and the default
registry, ``Revision.image`` with registry ports and digests, and digest stability."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from cairn.config import EnvironmentSpec
from cairn.configfile import load_file
from cairn.errors import ConfigError
from cairn.imageref import Reference, check_image
from cairn.images import defaults
from cairn.revision import Revision, canonical_json

SPEC = load_file(Path(__file__).resolve().parents[2] / "examples" / "shop.yaml").apps[0].environments["production"]
DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32

ACCEPTED = [
    ("short name with tag", "cairn/python:3.11"),
    ("short name without tag", "cairn/demo-app"),
    ("one-part short name", "python:3.11"),
    ("loopback registry with port", "127.0.0.1:5000/cairn/demo-app:v1"),
    ("registry host with dots", "registry.example.com/team/app:1.4.0"),
    ("localhost registry", "localhost/cairn/python:3.11"),
    ("pinned by digest", f"127.0.0.1:5000/cairn/demo-app@{DIGEST}"),
    ("tag and digest", f"127.0.0.1:5000/cairn/demo-app:v1@{DIGEST}"),
    ("short name by digest", f"cairn/demo-app@{DIGEST}"),
    ("IPv6 registry", "[::1]:5000/cairn/python:3.11"),
]

REFUSED = [
    ("uppercase name", "Cairn/Python"),
    ("trailing newline", "cairn/python:3.11\n"),
    ("leading space", " cairn/python:3.11"),
    ("empty", ""),
    ("short digest", "cairn/demo-app@sha256:abc"),
    ("uppercase digest", "cairn/demo-app@sha256:" + "AB" * 32),
    ("tag starting with a dot", "cairn/demo-app:.v1"),
    ("empty tag", "127.0.0.1:5000/cairn/demo-app:"),
    ("double slash", "cairn//python:3.11"),
    ("registry only", "127.0.0.1:5000/"),
]


@pytest.mark.parametrize("image", [c[1] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_config_accepts_full_references_and_short_names(image: str) -> None:
    assert check_image(image) == image
    assert EnvironmentSpec.model_validate(SPEC.model_dump() | {"image": image}).image == image


@pytest.mark.parametrize("image", [c[1] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_config_refuses_what_is_no_reference(image: str) -> None:
    with pytest.raises(ValueError, match="not an image reference"):
        check_image(image)
    with pytest.raises(ValueError):
        EnvironmentSpec.model_validate(SPEC.model_dump() | {"image": image})


PARSED = [
    ("port kept in the registry", "127.0.0.1:5000/cairn/demo-app:v1", ("127.0.0.1:5000", "cairn/demo-app", "v1", None)),
    ("digest and tag", f"127.0.0.1:5000/cairn/demo-app:v1@{DIGEST}", ("127.0.0.1:5000", "cairn/demo-app", "v1", DIGEST)),
    ("nested name", "registry.example.com/a/b/c:x", ("registry.example.com", "a/b/c", "x", None)),
]


@pytest.mark.parametrize(("text", "parts"), [c[1:] for c in PARSED], ids=[c[0] for c in PARSED])
def test_a_reference_parses_into_its_parts_and_prints_back(text: str, parts: tuple[str, str, str | None, str | None]) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.name, ref.tag, ref.digest) == parts
    assert str(ref) == text


QUALIFIED = [
    ("short name gets the default", "cairn/python:3.11", "127.0.0.1:5999/cairn/python:3.11"),
    ("short tagless name", "cairn/demo-app", "127.0.0.1:5999/cairn/demo-app"),
    ("short digest", f"cairn/demo-app@{DIGEST}", f"127.0.0.1:5999/cairn/demo-app@{DIGEST}"),
    ("full name kept", "registry.example.com/team/app:v1", "registry.example.com/team/app:v1"),
    ("full name with another port kept", "127.0.0.1:5000/cairn/python:3.11", "127.0.0.1:5000/cairn/python:3.11"),
]


@pytest.mark.parametrize(("image", "full"), [c[1:] for c in QUALIFIED], ids=[c[0] for c in QUALIFIED])
def test_qualify_gives_short_names_the_default_registry(image: str, full: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(defaults.ENV_VAR, "127.0.0.1:5999")
    assert str(defaults.qualify(image)) == full


def test_a_short_name_without_a_default_registry_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(defaults.ENV_VAR, raising=False)
    monkeypatch.setenv("CAIRN_HOME", str(tmp_path))  # no registry runs under this home
    assert defaults.default_registry() is None
    with pytest.raises(ConfigError) as info:
        defaults.qualify("cairn/python:3.11", "spec.image")
    [(field, value, fix)] = info.value.problems
    assert (field, value) == ("spec.image", "cairn/python:3.11")
    assert "cairn up" in fix and defaults.ENV_VAR in fix
    assert str(defaults.qualify("127.0.0.1:5000/cairn/python:3.11")) == "127.0.0.1:5000/cairn/python:3.11"


def test_a_malformed_default_registry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(defaults.ENV_VAR, "not a host")
    with pytest.raises(ConfigError) as info:
        defaults.qualify("cairn/python:3.11")
    assert info.value.problems[0][0] == defaults.ENV_VAR


def _revision(image: str, deploy_type: str = "image", version: str = "v2", image_digest: str | None = None) -> Revision:
    return Revision(app="shop-api", environment="production", deploy_type=deploy_type, version=version,  # type: ignore[arg-type]
                    spec=SPEC.model_copy(update={"image": image}), image_digest=image_digest)


IMAGES = [
    ("image type: the version is the tag, port kept", "127.0.0.1:5000/cairn/demo-app:v1", "image", None,
     "127.0.0.1:5000/cairn/demo-app:v2"),
    ("image type: pinned", "127.0.0.1:5000/cairn/demo-app:v1", "image", DIGEST, f"127.0.0.1:5000/cairn/demo-app:v2@{DIGEST}"),
    ("image type: tagless configured name", "127.0.0.1:5000/cairn/demo-app", "image", DIGEST,
     f"127.0.0.1:5000/cairn/demo-app:v2@{DIGEST}"),
    ("image type: a configured digest gives way to the version's", f"127.0.0.1:5000/cairn/demo-app@{OTHER}", "image", DIGEST,
     f"127.0.0.1:5000/cairn/demo-app:v2@{DIGEST}"),
    ("code package: the image as configured", "127.0.0.1:5000/cairn/python:3.11", "code-package", None,
     "127.0.0.1:5000/cairn/python:3.11"),
    ("code package: pinned", "127.0.0.1:5000/cairn/python:3.11", "code-package", DIGEST, f"127.0.0.1:5000/cairn/python:3.11@{DIGEST}"),
    ("stored before qualification: short kept", "cairn/demo-app:v1", "image", None, "cairn/demo-app:v2"),
    ("short code-package image", "cairn/python:3.11", "code-package", None, "cairn/python:3.11"),
]


@pytest.mark.parametrize(("image", "deploy_type", "digest", "shipped"), [c[1:] for c in IMAGES], ids=[c[0] for c in IMAGES])
def test_revision_image_is_the_full_pinned_reference(image: str, deploy_type: str, digest: str | None, shipped: str) -> None:
    assert _revision(image, deploy_type, image_digest=digest).image == shipped


def test_a_revision_without_an_image_digest_keeps_the_digest_it_was_stored_with() -> None:
    """The digest body of a revision stored before ``image_digest`` (and ``image_pull_secret``
    and ``user``, ``read_only_root``) existed, computed as it was then: the same revision loaded now has the same digest."""
    revision = _revision("cairn/demo-app:v1")
    body = json.loads(revision.model_dump_json(exclude={"digest", "image_digest"}))
    del body["spec"]["image_pull_secret"], body["spec"]["user"], body["spec"]["read_only_root"]
    assert revision.digest == hashlib.sha256(canonical_json(body).encode()).hexdigest()
    stored = {**body, "digest": revision.digest}  # a stored block: no image_digest key at all
    assert Revision.model_validate(stored).digest == revision.digest


def test_the_pinned_digest_and_the_pull_secret_are_part_of_the_revision() -> None:
    plain = _revision("127.0.0.1:5000/cairn/demo-app:v1")
    pinned = _revision("127.0.0.1:5000/cairn/demo-app:v1", image_digest=DIGEST)
    assert len({plain.digest, pinned.digest, _revision("127.0.0.1:5000/cairn/demo-app:v1", image_digest=OTHER).digest}) == 3
    with_secret = Revision(**{**plain.model_dump(exclude={"digest", "spec"}),
                              "spec": plain.spec.model_copy(update={"image_pull_secret": "registry-login"})})
    assert with_secret.digest != plain.digest
    again = Revision.model_validate_json(pinned.model_dump_json())
    assert again.digest == pinned.digest and again.image_digest == DIGEST


@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "a" * 32, "sha256:" + "AB" * 32, DIGEST + "\n"])
def test_a_malformed_image_digest_is_refused(digest: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        _revision("127.0.0.1:5000/cairn/demo-app:v1", image_digest=digest)
