"""The release order: one flow run that ships one version of one app to one environment."""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from pydantic import Field

from cairn.background import in_background
from cairn.config import EnvironmentName
from cairn.errors import PermanentError
from cairn.flows.engine import current_run, drive
from cairn.orders import records, rules, tags
from cairn.orders.requests import ReleaseRequest
from cairn.orders.revisions import changes_markdown, revision_and_runtime, snapshot
from cairn.plan import PauseMode, PauseModeName, plan_release
from cairn.revision import VERSION, Revision
from cairn.tasks.context import target
from cairn.tasks.report import flush_finished


def _take_turn(me: FlowRun, app: str, environment: str) -> None:
    rules.take_turn(me, app, environment, on_wait=lambda ahead: get_run_logger().info("queued behind order %s (%s)", ahead.id, ahead.name))


def _belongs(revision: Revision, app: str, environment: str) -> None:
    """A run's ``rev:`` tag is anyone's to write (a copied run, the API): the revision it names must
    be one of this order's app and environment, or the order would ship another app's instances
    (its image, its secrets) under this one's name."""
    if (revision.app, revision.environment) != (app, environment):
        raise PermanentError(f"the run's tag {tags.REV}{revision.digest[:tags.REV_DIGITS]} names a revision of "
                             f"{revision.app}/{revision.environment}, not of {app}/{environment} (its parameters)",
                             hint=f"start a new order (`cairn release create {app} {environment} --version V`), "
                                  "not a copy of another order's run with its tags")


# A tag's worth of text: a user name or `webhook:<delivery id>`.
REQUESTER = r"^[A-Za-z0-9._:@-]{0,160}$"


def _ui(title: str, description: str) -> dict[str, str]:
    # Prefect builds the deployment's form from the signature and overwrites a Field's title and
    # description with the parameter's name and docstring; json_schema_extra is applied last.
    return {"title": title, "description": description}


@flow(name="release", flow_run_name="{app}-{environment}-{version}", persist_result=True, validate_parameters=True,
      on_completion=[flush_finished], on_failure=[flush_finished])
def release(
    app: Annotated[str, Field(min_length=1, json_schema_extra=_ui("App", "Name of a registered app (`cairn app list`)."))],
    environment: Annotated[EnvironmentName, Field(json_schema_extra=_ui("Environment", "Where to ship."))],
    version: Annotated[str, Field(pattern=VERSION.pattern, json_schema_extra=_ui(
        "Version", "Image tag or code package version: 1-63 letters, digits, `.`, `_` or `-` (e.g. `v2`, `1.4.0`)."))],
    batches: Annotated[int, Field(ge=1, json_schema_extra=_ui("Batches", "Number of batches, 1 <= batches <= instances."))] = 2,
    pause_mode: Annotated[PauseModeName, Field(json_schema_extra=_ui(
        "Pause mode", "Pause for approval after the **first batch** only, after **every batch** but the last, or **none**."))] = "first_batch",
    hot_pause_s: Annotated[float, Field(ge=0, json_schema_extra=_ui(
        "Hot pause (s)", "Stay paused in-process this long (fast resume), then suspend (no process)."))] = 600.0,
    suspend_days: Annotated[float, Field(gt=0, json_schema_extra=_ui("Suspend timeout (days)", "A suspended order fails after this."))] = 30.0,
    requested_by: Annotated[str, Field(pattern=REQUESTER, json_schema_extra=_ui(
        "Requested by", "Who asks for this order, kept as its `by:` tag (the webhook sets `webhook:<delivery id>`)."))] = "",
) -> dict[str, Any]:
    """Ship ``version`` to ``app``/``environment`` batch by batch, pausing for approval per the pause mode."""
    run_id, _ = current_run()
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    me = context.flow_run  # as the engine read it when the run started: tags and creation time
    run_tags = me.tags
    # The one-order guard needs nothing but the run: it reads the active orders while this thread
    # reads the revision and reaches the runtime, and is waited on before anything is touched.
    guarded = in_background(_take_turn, me, app, environment)
    revision = revision_and_runtime(run_tags) or snapshot(ReleaseRequest.parse(
        {"app": app, "environment": environment, "version": version, "batches": batches, "pause_mode": pause_mode}))
    _belongs(revision, app, environment)
    changes = in_background(changes_markdown, revision)  # the report's first block, ready by its first write
    # Runs the webhook's automation creates carry nothing but parameters: who asked becomes a tag.
    by = [tags.by(requested_by)] if requested_by else []
    wanted = [*tags.for_kind("release", app, environment), *tags.for_revision(revision.digest, revision.spec.cluster), *by]
    if not set(wanted) <= set(run_tags):  # a re-run (resume after a suspend, retry) has them already
        records.set_tags(run_id, wanted)
    # The UI's form does not run Python validators and the batch count depends on the stored
    # environment: refuse a bad one before waiting for, or touching, anything.
    plan_release(revision.spec.instances, batches)
    target(revision)  # the runtime, connected for the flow's tasks (if the read above did not already)
    guarded.result()
    get_run_logger().info("release %s %s -> %s (revision %s)", app, environment, version, revision.short)
    return drive(revision, batches, PauseMode(pause_mode), hot_pause_s=hot_pause_s, suspend_timeout_s=suspend_days * 86400,
                 title=f"{app} {environment} -> {version}", changes=changes)
