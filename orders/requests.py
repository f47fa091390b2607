"""A request for a release order, and the pre-flight check every door runs on it.

The CLI (``cairn release create``), the webhook, schedules and the ``release`` flow itself (for
runs started from the UI's form, which runs no Python validators) all take a request through
:func:`check` before anything is created: the app, the environment, the version (and its code
package), the image (qualified with the default registry, its tag resolved to the digest the
revision pins: ``orders.images``), and the batch count against the environment's instances. What a run would fail on at
its first batch is refused at the door, with the field, the value and the fix.

Checking stores nothing: the revision it builds is frozen (saved as a block) only when an order
is really made (``revisions.freeze``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cairn.config import BLOCK_NAME, EnvironmentName
from cairn.errors import ConfigError
from cairn.plan import PauseMode, ReleasePlan, plan_release
from cairn.revision import VERSION, Revision

MAX_BATCHES = 1000


class ReleaseRequest(BaseModel):
    """What is asked: ship ``version`` to ``app``/``environment`` in ``batches`` batches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    app: str = Field(min_length=1, max_length=63, pattern=BLOCK_NAME.pattern, title="App")
    environment: EnvironmentName = Field(title="Environment")
    version: str = Field(min_length=1, max_length=63, pattern=VERSION.pattern, title="Version")
    batches: int = Field(2, ge=1, le=MAX_BATCHES, title="Batches")
    pause_mode: PauseMode = Field(PauseMode.FIRST_BATCH, title="Pause mode")

    @classmethod
    def parse(cls, data: Mapping[str, Any], where: str = "") -> Self:
        """The request, or one ``ConfigError`` naming every bad field (prefixed with ``where``)."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(problems(exc, where)) from None

    def parameters(self) -> dict[str, Any]:
        """The ``release`` deployment's parameters for this request."""
        return {"app": self.app, "environment": self.environment, "version": self.version, "batches": self.batches,
                "pause_mode": str(self.pause_mode)}


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed the pre-flight check: the revision it would ship and its plan."""

    request: ReleaseRequest
    revision: Revision
    plan: ReleasePlan


def check(request: ReleaseRequest, where: str = "") -> CheckedRequest:
    """What the order would fail on, refused now: an unknown app or environment (``NotFound``), a
    version the app's deploy type cannot ship or a missing code package, more batches than
    instances (``ConfigError``), an image or tag the registry does not have (``PermanentError``)
    or an unreachable registry (``TemporaryError``). Reads the stored configuration and the
    registry; stores nothing."""
    from cairn import packages
    from cairn.blocks import store
    from cairn.orders.images import pin

    app_block = store.load_app(request.app)
    env_block = store.load_environment(request.app, request.environment)
    package_digest = packages.resolve(request.app, request.version).digest if app_block.deploy_type == "code-package" else None
    try:
        plan = plan_release(env_block.spec.instances, request.batches)
    except ConfigError as exc:
        raise ConfigError([(_at(where, field), value, fix) for field, value, fix in exc.problems]) from None
    # The registry is asked last: what the stored configuration alone refuses costs no request.
    spec, image_digest = pin(env_block.spec, app_block.deploy_type, request.version, where)
    try:
        revision = Revision(app=request.app, environment=env_block.environment, deploy_type=app_block.deploy_type,
                            version=request.version, spec=spec, package_digest=package_digest, image_digest=image_digest)
    except ValidationError as exc:
        raise ConfigError(problems(exc, where)) from None
    return CheckedRequest(request, revision, plan)


def problems(exc: ValidationError, where: str = "") -> list[tuple[str, Any, str]]:
    return [(_at(where, ".".join(map(str, e["loc"])) or "request"), e.get("input"), e["msg"]) for e in exc.errors()]


def _at(where: str, field: str) -> str:
    return f"{where}.{field}" if where else field
