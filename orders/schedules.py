"""Scheduled releases: cron schedules on the ``release`` deployment, e.g. nightly to ``test``.

A schedule is a Prefect deployment schedule with the order's parameters, so the server's
scheduler service creates the runs, the UI shows and pauses them, and nothing of cairn has to be
up at the scheduled time but the server and the worker. There is one schedule per app and
environment (slug ``cairn-<app>-<env>``): scheduling again replaces it. A scheduled run takes
the environment's configuration as it is when the run starts (it snapshots its revision then),
and like any order it refuses to run while another order holds the environment.

``cairn up`` re-deploys the flows without touching schedules (Prefect keeps a deployment's
schedules when a redeploy passes none).

From configuration: a YAML file ``schedules: [{app, environment, version, cron, batches,
pause_mode, timezone}]`` applied with ``cairn release schedule apply -f FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cairn.errors import ConfigError, NotFound

PREFIX = "cairn-"


class ReleaseSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    app: str
    environment: Literal["production", "test"]
    version: str
    cron: str = Field(description="Five-field cron, e.g. '0 2 * * *' (02:00 every night).")
    batches: int = Field(2, ge=1)
    pause_mode: Literal["first_batch", "every_batch", "none"] = "first_batch"
    timezone: str = "UTC"

    @property
    def slug(self) -> str:
        return f"{PREFIX}{self.app}-{self.environment}"

    def parameters(self) -> dict[str, Any]:
        return {"app": self.app, "environment": self.environment, "version": self.version, "batches": self.batches,
                "pause_mode": self.pause_mode}


def build(**fields: Any) -> ReleaseSchedule:
    try:
        return ReleaseSchedule.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError([(".".join(map(str, e["loc"])), e.get("input"), e["msg"]) for e in exc.errors()]) from None


def _validate(item: ReleaseSchedule, where: str = "schedule") -> Any:
    """What a scheduled run would fail on at 2 a.m. is refused now: the app, environment, version,
    batch count and cron expression. Returns Prefect's CronSchedule."""
    from prefect.client.schemas.schedules import CronSchedule

    from cairn.blocks import store
    from cairn.plan import plan_release
    from cairn.revision import Revision

    env_block = store.load_environment(item.app, item.environment)
    app_block = store.load_app(item.app)
    try:
        Revision(app=item.app, environment=env_block.environment, deploy_type=app_block.deploy_type, version=item.version,
                 spec=env_block.spec)
    except ValidationError as exc:
        raise ConfigError.single(f"{where}.version", item.version, exc.errors()[0]["msg"]) from None
    plan_release(env_block.spec.instances, item.batches)
    if len(item.cron.split()) != 5:
        raise ConfigError.single(f"{where}.cron", item.cron, "five fields: minute hour day-of-month month day-of-week")
    try:
        return CronSchedule(cron=item.cron, timezone=item.timezone)
    except ValidationError as exc:
        raise ConfigError.single(f"{where}.cron", item.cron, exc.errors()[0]["msg"]) from None


def _deployment_id() -> Any:
    from cairn.orders.actions import _deployment_id

    return _deployment_id("release")


def set_schedule(item: ReleaseSchedule) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    cron = _validate(item)
    deployment = _deployment_id()
    with get_client(sync_client=True) as client:
        for old in client.read_deployment_schedules(deployment):
            if old.slug == item.slug:
                client.delete_deployment_schedule(deployment, old.id)
        client.create_deployment_schedules(deployment, [DeploymentScheduleCreate(
            schedule=cron, active=True, parameters=item.parameters(), slug=item.slug)])
    return next(s for s in list_schedules() if s["slug"] == item.slug)


def list_schedules(app: str | None = None) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_deployment_schedules(_deployment_id())
    rows = []
    for s in found:
        if not (s.slug or "").startswith(PREFIX):
            continue
        params = s.parameters or {}
        if app and params.get("app") != app:
            continue
        rows.append({"slug": s.slug, "id": str(s.id), "active": s.active, "cron": getattr(s.schedule, "cron", None),
                     "timezone": getattr(s.schedule, "timezone", None), **params})
    return sorted(rows, key=lambda r: r["slug"])


def remove_schedule(app: str, environment: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client

    slug = f"{PREFIX}{app}-{environment}"
    deployment = _deployment_id()
    with get_client(sync_client=True) as client:
        for s in client.read_deployment_schedules(deployment):
            if s.slug == slug:
                # Deleting a schedule also deletes the runs it had created and not yet started.
                client.delete_deployment_schedule(deployment, s.id)
                return {"removed": slug}
    raise NotFound(f"no release schedule for {app}/{environment}", hint="cairn release schedule list")


def apply_file(path: Path) -> list[dict[str, Any]]:
    """Validate every schedule of the file first, then set them all (nothing is set on an error)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError.single(str(path), "", f"cannot read a YAML file: {exc}") from None
    raw = data.get("schedules") if isinstance(data, dict) else None
    if not isinstance(raw, list):
        raise ConfigError.single("schedules", raw, "a list of {app, environment, version, cron, ...}")
    items, problems = [], []
    for i, entry in enumerate(raw):
        where = f"schedules[{i}]"
        try:
            item = ReleaseSchedule.model_validate(entry)
            _validate(item, where)
            items.append(item)
        except ValidationError as exc:
            problems += [(f"{where}.{'.'.join(map(str, e['loc']))}", e.get("input"), e["msg"]) for e in exc.errors()]
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return [set_schedule(item) for item in items]
