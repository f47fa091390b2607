"""Revisions: the immutable snapshot of what one release order ships.

A revision is one environment's configuration plus the version it ships, with a content digest.
Equal inputs give equal digests; any change (a variable, the instance count, the version) gives a
new one. Rollback returns an environment to a revision, so the snapshot, not the live
configuration, is what a release and a rollback apply.

The snapshot pins the image: ``image_digest`` is the manifest digest the tag pointed at when
the order was made, so a rollback runs the very bytes that ran before even if the tag moved.
Fields added after revisions were first stored (``image_digest``, ``spec.image_pull_secret``, ``spec.user``,
``spec.read_only_root``) stay out of the digest while at their default: a revision stored before them keeps its digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import Field, PrivateAttr, computed_field, field_validator, model_validator

from cairn.config import DeployType, EnvironmentName, EnvironmentSpec, Spec, must_pass
from cairn.imageref import Reference, is_digest, is_short
from cairn.naming import VERSION as VERSION  # re-exported: the flows and orders spell it cairn.revision.VERSION
from cairn.naming import version_problem

# At their default, these stay out of the digest's body (see the module's docstring).
_LATER_FIELDS = ("image_digest",)
_LATER_SPEC_FIELDS: dict[str, object] = {"image_pull_secret": None, "user": None, "read_only_root": False}


def canonical_json(data: Any) -> str:
    """One spelling per value: sorted keys, no spaces, so a digest depends on content alone."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Revision(Spec):
    """What a release order ships: ``app``/``environment`` at ``version`` with ``spec``."""

    app: str = Field(title="App")
    environment: EnvironmentName = Field(title="Environment")
    deploy_type: DeployType = Field(title="Deploy type")
    version: str = Field(title="Version", description="Image tag (deploy type image) or code package version/digest.")
    spec: EnvironmentSpec = Field(title="Environment configuration")
    package_digest: str | None = Field(None, title="Code package digest", description="sha256 of the code package, when one ships.")
    image_digest: str | None = Field(
        None, title="Image digest", description="The manifest digest (sha256:...) the image's tag pointed at when the order was made.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _verify_digest(cls, data: Any, handler: Any) -> Revision:
        """A stored revision carries its digest; loading it back checks the content still matches."""
        claimed = data.pop("digest", None) if isinstance(data, dict) else None
        revision: Revision = handler(data)
        if claimed is not None and claimed != revision.digest:
            raise ValueError(f"revision content does not match its digest {claimed[:12]}: it was altered")
        return revision

    @field_validator("version")
    @classmethod
    def _version(cls, version: str) -> str:
        return must_pass(version, version_problem(version))

    @field_validator("image_digest")
    @classmethod
    def _image_digest(cls, digest: str | None) -> str | None:
        if digest is not None and not is_digest(digest):
            raise ValueError("an image digest is sha256:<64 lowercase hex>")
        return digest

    # The digest names every pod, label and annotation of a batch: computed once per revision
    # (it is frozen), not once per use.
    _digest: str | None = PrivateAttr(default=None)

    @computed_field(title="Digest")  # type: ignore[prop-decorator]
    @property
    def digest(self) -> str:
        if self._digest is None:
            body = self.model_dump(mode="json", exclude={"digest"})
            for name in _LATER_FIELDS:
                if body.get(name) is None:
                    body.pop(name, None)
            for name, default in _LATER_SPEC_FIELDS.items():
                if body["spec"].get(name, default) == default:
                    body["spec"].pop(name, None)
            self._digest = hashlib.sha256(canonical_json(body).encode()).hexdigest()
        return self._digest

    def __eq__(self, other: object) -> bool:
        # By content, which the digest is (pydantic would also compare the cache above).
        return isinstance(other, Revision) and self.digest == other.digest

    def __hash__(self) -> int:
        return hash(self.digest)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Revision:
        copied = super().model_copy(update=update, deep=deep)
        copied._digest = None  # an update makes another revision
        return copied

    @property
    def short(self) -> str:
        """The first 12 hex digits: enough to tell revisions apart in labels and tables."""
        return self.digest[:12]

    @property
    def image(self) -> str:
        """The image instances run, ``registry/name:tag[@sha256:...]``: for deploy type image the
        version is the tag; pinned to ``image_digest`` when the order resolved it.

        A revision stored before orders qualified short names keeps its short name
        (``cairn/python:3.11``): the runtime qualifies it with the default registry."""
        short = is_short(self.spec.image)
        # Any host stands in for a short name's registry: it is not printed below.
        ref = Reference.parse(self.spec.image, default_registry="localhost" if short else None, tagless=True)
        if self.deploy_type == "image":
            ref = ref.with_tag(self.version)
        if self.image_digest:
            ref = ref.at(self.image_digest)
        text = str(ref)
        return text.removeprefix(f"{ref.registry}/") if short else text
