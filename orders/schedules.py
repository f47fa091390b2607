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
from typing import Any

from pydantic import Field, ValidationError

from cairn.errors import ConfigError, NotFound
from cairn.orders import records
from cairn.orders.requests import ReleaseRequest, check, problems

PREFIX = "cairn-"


class ReleaseSchedule(ReleaseRequest):
    """A release request made by the server's scheduler at each time ``cron`` names."""

    cron: str = Field(description="Five-field cron, e.g. '0 2 * * *' (02:00 every night).")
    timezone: str = "UTC"

    @property
    def slug(self) -> str:
        return f"{PREFIX}{self.app}-{self.environment}"


def build(**fields: Any) -> ReleaseSchedule:
    return ReleaseSchedule.parse(fields)


def _validate(item: ReleaseSchedule, where: str = "schedule") -> Any:
    """What a scheduled run would fail on at 2 a.m. is refused now: the request (``requests.check``:
    app, environment, version, batch count) and the cron expression. Returns Prefect's CronSchedule."""
    from prefect.client.schemas.schedules import CronSchedule

    check(item, where)
    if len(item.cron.split()) != 5:
        raise ConfigError.single(f"{where}.cron", item.cron, "five fields: minute hour day-of-month month day-of-week")
    try:
        return CronSchedule(cron=item.cron, timezone=item.timezone)
    except ValidationError as exc:
        raise ConfigError.single(f"{where}.cron", item.cron, exc.errors()[0]["msg"]) from None


def _deployment_id() -> Any:
    return records.deployment_id("release")


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
    items: list[ReleaseSchedule] = []
    found: list[tuple[str, Any, str]] = []
    for i, entry in enumerate(raw):
        where = f"schedules[{i}]"
        try:
            item = ReleaseSchedule.model_validate(entry)
            _validate(item, where)
            items.append(item)
        except ValidationError as exc:
            found += problems(exc, where)
        except ConfigError as exc:
            found += exc.problems
    if found:
        raise ConfigError(found)
    return [set_schedule(item) for item in items]
