"""An order's image, pinned: the short name qualified, the tag resolved to its digest.

Done once, when the request is checked (``requests.check``), so the revision an order freezes
names a full reference and the manifest digest the tag pointed at then. Every re-run of the
order, and a rollback to it later, ships that digest: a tag moved since changes nothing.
"""

from __future__ import annotations

from cairn.config import DeployType, EnvironmentSpec
from cairn.errors import ConfigError, PermanentError
from cairn.imageref import Reference
from cairn.images import store
from cairn.images.credentials import Credentials
from cairn.images.defaults import qualify
from cairn.tasks.context import pull_login


def pin(spec: EnvironmentSpec, deploy_type: DeployType, version: str, where: str = "") -> tuple[EnvironmentSpec, str]:
    """``spec`` with its image qualified, and the digest the image (at ``version`` for deploy
    type image) resolves to now. A missing image or tag is a ``PermanentError`` naming it and
    the fix; an unreachable registry a ``TemporaryError`` (``cairn.images.distribution``)."""
    field = f"{where}.image" if where else "image"
    qualified = qualify(spec.image, field)
    ref = qualified.with_tag(version) if deploy_type == "image" else qualified
    if ref.tag is None and ref.digest is None:
        raise ConfigError.single(field, spec.image, "give the image a tag or a digest (cairn never assumes :latest), e.g. cairn/python:3.11")
    credentials = Credentials(*pull_login(spec.image_pull_secret)) if spec.image_pull_secret else None
    try:
        digest = store.resolve(ref, credentials)
    except PermanentError as exc:
        raise PermanentError(exc.message, hint=_fix(ref, deploy_type, exc)) from None
    return spec.model_copy(update={"image": str(qualified)}), digest


def _fix(ref: Reference, deploy_type: DeployType, exc: PermanentError) -> str | None:
    """For deploy type image a missing tag is a version nobody pushed: say that."""
    if deploy_type == "image" and " not found " in exc.message:
        return f"push the image as {ref} first, or ship a version that is a tag of {ref.repository}"
    return exc.hint
