"""``cairn release ...``: create, inspect and act on release orders.

The CLI and the Prefect UI take the same code path: both end in ``cairn.orders.records``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cairn.cli.args import AppArg, EnvArg, OrderArg, checked, environment_problem, refuse_bad
from cairn.cli.output import JsonFlag, console, emit, errors_as_exit
from cairn.naming import dns1123_problem, version_problem
from cairn.plan import PauseMode, pauses_after, plan_release

if TYPE_CHECKING:
    from cairn.revision import Revision

release_app = typer.Typer(help="Release orders: ship a version to an environment batch by batch.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(release_app, name="release")


def plan_document(app: str, env: str, version: str, instances: int, batches: int, mode: PauseMode,
                  image: str | None = None, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """``image``: the pinned reference the order would ship (``registry/name:tag@sha256:...``);
    ``changes``: what it changes against what runs now (``changes_document``)."""
    from cairn.naming import instance_name

    plan = plan_release(instances, batches)
    return {
        "app": app,
        "environment": env,
        "version": version,
        "image": image,
        "instances": instances,
        "pause_mode": str(mode),
        **({"changes": changes} if changes is not None else {}),
        "batches": [
            {
                "index": b.index,
                "size": b.size,
                "slots": list(b.slots),
                "instances": [instance_name(app, env, s) for s in b.slots],
                "pause_after": pauses_after(b.index, plan.last, mode),
            }
            for b in plan.batches
        ],
    }


def changes_document(running: Revision | None, shipped: Revision) -> dict[str, Any]:
    from cairn import diff

    return {"against": {"revision": running.digest, "version": running.version} if running else None,
            "fields": [c.as_dict() for c in diff.revision_changes(running, shipped)]}


def render_changes(changes: dict[str, Any], title: str = "changes against what runs now") -> None:
    against = changes["against"]
    where = f"revision {against['revision'][:12]} (version {against['version']})" if against else "nothing (the first order)"
    if not changes["fields"]:
        console.print(f"no change against {where}", markup=False, highlight=False)
        return
    table = Table("field", "change", title=f"{title}: {where}")
    for c in changes["fields"]:
        table.add_row(c["field"], c["summary"])
    console.print(table)


def _render_plan(doc: dict[str, Any]) -> None:
    console.print(
        f"plan: [bold]{doc['app']}[/] {doc['environment']} -> {doc['version']}: "
        f"{doc['instances']} instances in {len(doc['batches'])} batches, pause mode {doc['pause_mode']}"
    )
    if doc.get("image"):
        console.print(f"image: {doc['image']}", markup=False, highlight=False, soft_wrap=True)  # a digest is copied whole
    if "changes" in doc:
        render_changes(doc["changes"])
    table = Table("batch", "size", "instances", "then")
    for b in doc["batches"]:
        table.add_row(str(b["index"]), str(b["size"]), ", ".join(b["instances"]), "pause for approval" if b["pause_after"] else "")
    console.print(table)


@release_app.command("create")
def create(
    app_name: AppArg,
    env: EnvArg,
    version: Annotated[str, typer.Option("--version", "-v", callback=checked(version_problem), help="Image tag or code package version to ship.")],
    batches: Annotated[int, typer.Option("--batches", "-b", help="Number of batches, 1 <= B <= instances.")] = 2,
    pause_mode: Annotated[PauseMode, typer.Option("--pause-mode", "-p", help="When to pause for approval.")] = PauseMode.FIRST_BATCH,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; create nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until the order pauses or ends.")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="Queue behind an active order instead of refusing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a release order (one Prefect flow run)."""
    with errors_as_exit(as_json):
        if dry_run:
            from cairn.orders.requests import ReleaseRequest, check
            from cairn.orders.revisions import running

            # The pre-flight check every door runs (it stores nothing); create_order runs it too.
            checked = check(ReleaseRequest.parse({"app": app_name, "environment": env, "version": version, "batches": batches,
                                                  "pause_mode": pause_mode}))
            changes = changes_document(running(app_name, env), checked.revision)
            emit(plan_document(app_name, env, version, checked.plan.instances, batches, pause_mode, checked.revision.image, changes),
                 as_json, _render_plan)
            return
        from cairn.orders import actions

        order = actions.create_order(app_name, env, version, batches, pause_mode, queue=queue)
    emit(order, as_json, lambda o: console.print(f"release order [bold]{o['id']}[/] created: {o['name']}\n{o['url']}"))
    if wait:
        from cairn.cli import follow

        raise typer.Exit(follow.follow(order["id"]))


def _render_order(o: dict[str, Any]) -> None:
    console.print(f"[bold]{o['name']}[/]  {o['id']}\n  status: [bold]{o['status']}[/] ({o['state']})  pause mode: {o['pause_mode']}\n  {o['url']}")
    if o.get("message") and o["status"] in ("failed", "closed"):
        console.print(f"  {o['message']}", markup=False, highlight=False)
    if o.get("instances"):
        table = Table("instance", "revision", "phase", "ready", "restarts", "reason")
        for i in o["instances"]:
            table.add_row(i["name"], i["revision"][:12], i["phase"], "yes" if i["ready"] else "no", str(i["restarts"]), i.get("reason") or "")
        console.print(table)


@release_app.command("list")
def list_cmd(app_name: Annotated[str | None, typer.Option("--app", callback=checked(dns1123_problem))] = None,
             env: Annotated[str | None, typer.Option("--env", callback=checked(environment_problem))] = None,
             limit: int = 50, as_json: JsonFlag = False) -> None:
    """Release orders, newest first."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        rows = actions.list_orders(app_name, env, limit)

    def render(rows: list[dict[str, Any]]) -> None:
        table = Table("id", "name", "status", "pause mode", "created")
        for r in rows:
            table.add_row(r["id"][:8], r["name"], r["status"], r["pause_mode"], (r["created"] or "")[:19])
        console.print(table)

    emit(rows, as_json, render)


@release_app.command("show")
def show_cmd(order: OrderArg, as_json: JsonFlag = False) -> None:
    """One order: status, pause mode (with who switched it), and its instances."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.show(order)
    emit(data, as_json, _render_order)


@release_app.command("resume")
def resume_cmd(order: OrderArg,
               pause_mode: Annotated[PauseMode | None, typer.Option("--pause-mode", "-p")] = None,
               comment: Annotated[str, typer.Option("--comment", "-c")] = "", as_json: JsonFlag = False) -> None:
    """Approve a paused order: it goes on with the next batch."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.resume(order, pause_mode, comment)
    emit(data, as_json, _render_order)


@release_app.command("pause-mode")
def pause_mode_cmd(order: OrderArg, mode: Annotated[PauseMode, typer.Argument(metavar="MODE")],
                   as_json: JsonFlag = False) -> None:
    """Switch a running or paused order to another pause mode (recorded with who and when)."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.switch_pause_mode(order, mode)
    emit(data, as_json, _render_order)


@release_app.command("retry")
def retry_cmd(order: OrderArg, as_json: JsonFlag = False) -> None:
    """Re-deploy only the failed instances; a failed order goes on from where it stopped."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.retry(order)

    def render(d: dict[str, Any]) -> None:
        retried = d["retry"].get("retried") or []
        console.print(f"re-deployed: {', '.join(retried)}" if retried else "no failed instance: nothing to retry")
        _render_order(d["order"])

    emit(data, as_json, render)


@release_app.command("close")
def close_cmd(order: OrderArg, as_json: JsonFlag = False) -> None:
    """Stop an order that is not completed; it ends `closed` and instances stay as they are."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.close(order)
    emit(data, as_json, _render_order)


@release_app.command("rollback")
def rollback_cmd(order: OrderArg, as_json: JsonFlag = False) -> None:
    """Return every instance to the last completed revision, batch by batch (closing this order first)."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.rollback(order=order)
    emit(data, as_json, lambda d: console.print(f"rolled back ({d['rollback']})"))


@release_app.command("wait")
def wait_cmd(order: OrderArg, as_json: JsonFlag = False) -> None:
    """Follow an order with a progress bar until it pauses or ends."""
    from cairn.cli import follow

    raise typer.Exit(follow.follow(order))


VERBS = ("set", "list", "remove", "apply")


def _verb(args: list[str]) -> tuple[str, list[str]]:
    # One command with a verb rather than a group: a group cannot take APP ENV itself.
    return (args[0], args[1:]) if args and args[0] in VERBS else ("set", args)


def _schedule_args(args: list[str]) -> list[str]:
    """APP and ENV of set and remove, checked as the other commands' APP and ENV are."""
    verb, rest = _verb(args or [])
    if verb in ("set", "remove"):
        for value, rule in zip(rest, (dns1123_problem, environment_problem), strict=False):
            refuse_bad(value, rule)
    return args


@release_app.command("schedule")
def schedule_cmd(args: Annotated[list[str], typer.Argument(metavar="[set] APP ENV | list | remove APP ENV | apply",
                                                           callback=_schedule_args)],
                 version: Annotated[str | None, typer.Option("--version", "-v", callback=checked(version_problem),
                                                             help="Version every scheduled run ships.")] = None,
                 cron: Annotated[str | None, typer.Option("--cron", help="Five-field cron, e.g. '0 2 * * *'.")] = None,
                 batches: Annotated[int, typer.Option("--batches", "-b")] = 2,
                 pause_mode: Annotated[PauseMode, typer.Option("--pause-mode", "-p")] = PauseMode.FIRST_BATCH,
                 timezone: Annotated[str, typer.Option("--timezone", help="IANA zone the cron is read in.")] = "UTC",
                 app_filter: Annotated[str | None, typer.Option("--app", callback=checked(dns1123_problem),
                                                                help="list: only this app's schedules.")] = None,
                 file: Annotated[Path | None, typer.Option("-f", "--file", help="apply: YAML with a `schedules:` list.")] = None,
                 as_json: JsonFlag = False) -> None:
    """Scheduled releases, run by the Prefect server's scheduler (one schedule per app and environment).

    cairn release schedule APP ENV --version V --cron "0 2 * * *" [--batches B --pause-mode M]   (replaces its schedule)
    cairn release schedule list [--app APP] | remove APP ENV | apply -f FILE
    """
    verb, rest = _verb(args)
    with errors_as_exit(as_json):
        from cairn.errors import ConfigError
        from cairn.orders import schedules

        if verb in ("set", "remove") and len(rest) != 2:
            raise ConfigError.single("arguments", " ".join(args), f"expected: cairn release schedule {'' if verb == 'set' else 'remove '}APP ENV")
        if verb == "set":
            if not (version and cron):
                raise ConfigError.single("options", "", "--version and --cron are required to schedule a release")
            item = schedules.build(app=rest[0], environment=rest[1], version=version, cron=cron, batches=batches,
                                   pause_mode=str(pause_mode), timezone=timezone)
            data: Any = schedules.set_schedule(item)
            emit(data, as_json, lambda d: console.print(f"scheduled {d['app']} {d['environment']} -> {d['version']} "
                                                        f"at '{d['cron']}' ({d['timezone']})"))
        elif verb == "remove":
            data = schedules.remove_schedule(rest[0], rest[1])
            emit(data, as_json, lambda d: console.print(f"removed {d['removed']}"))
        elif verb == "apply":
            if file is None:
                raise ConfigError.single("options", "", "apply needs -f FILE")
            emit(schedules.apply_file(file), as_json, _render_schedules)
        else:
            emit(schedules.list_schedules(app_filter), as_json, _render_schedules)


def _render_schedules(rows: list[dict[str, Any]]) -> None:
    table = Table("app", "environment", "version", "cron", "timezone", "batches", "pause mode", "active")
    for r in rows:
        table.add_row(r.get("app"), r.get("environment"), r.get("version"), r["cron"], r["timezone"], str(r.get("batches")),
                      r.get("pause_mode"), "yes" if r["active"] else "no")
    console.print(table)
