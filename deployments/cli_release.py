"""``cairn release ...``: create, inspect and act on release orders.

The CLI and the Prefect UI take the same code path: both end in ``cairn.flows.orders``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cairn.deployments.output import console, emit, errors_as_exit
from cairn.plan import PauseMode, pauses_after, plan_release

release_app = typer.Typer(help="Release orders: ship a version to an environment batch by batch.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON with stable keys, for scripts.")]


def register(root: typer.Typer) -> None:
    root.add_typer(release_app, name="release")


def plan_document(app: str, env: str, version: str, instances: int, batches: int, mode: PauseMode) -> dict[str, Any]:
    from cairn.naming import instance_name

    plan = plan_release(instances, batches)
    return {
        "app": app,
        "environment": env,
        "version": version,
        "instances": instances,
        "pause_mode": str(mode),
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


def _render_plan(doc: dict[str, Any]) -> None:
    console.print(
        f"plan: [bold]{doc['app']}[/] {doc['environment']} -> {doc['version']}: "
        f"{doc['instances']} instances in {len(doc['batches'])} batches, pause mode {doc['pause_mode']}"
    )
    table = Table("batch", "size", "instances", "then")
    for b in doc["batches"]:
        table.add_row(str(b["index"]), str(b["size"]), ", ".join(b["instances"]), "pause for approval" if b["pause_after"] else "")
    console.print(table)


@release_app.command("create")
def create(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(metavar="ENV")],
    version: Annotated[str, typer.Option("--version", "-v", help="Image tag or code package version to ship.")],
    batches: Annotated[int, typer.Option("--batches", "-b", help="Number of batches, 1 <= B <= instances.")] = 2,
    pause_mode: Annotated[PauseMode, typer.Option("--pause-mode", "-p", help="When to pause for approval.")] = PauseMode.FIRST_BATCH,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; create nothing.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until the order pauses or ends.")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="Queue behind an active order instead of refusing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create a release order (one Prefect flow run)."""
    with errors_as_exit(as_json):
        from cairn.blocks import store
        from cairn.revision import Revision

        env_block = store.load_environment(app_name, env)
        app_block = store.load_app(app_name)
        # Validate the version and the batch count before anything is created.
        Revision(app=app_name, environment=env_block.environment, deploy_type=app_block.deploy_type, version=version, spec=env_block.spec)
        doc = plan_document(app_name, env, version, env_block.spec.instances, batches, pause_mode)
        if dry_run:
            emit(doc, as_json, _render_plan)
            return
        from cairn.deployments import actions

        order = actions.create_order(app_name, env, version, batches, pause_mode, queue=queue)
    emit(order, as_json, lambda o: console.print(f"release order [bold]{o['id']}[/] created: {o['name']}\n{o['url']}"))
    if wait:
        from cairn.deployments import follow

        raise typer.Exit(follow.follow(order["id"]))
