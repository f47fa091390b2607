"""The ``cairn`` command line. Prefect is imported lazily so ``cairn --help`` answers at once.

Before a command runs, the root callback points the process at the platform
(``cairn.controlplane.connection``: ``--api``, the environment, or what ``cairn up`` recorded in
``$CAIRN_HOME``), before anything imports Prefect; a command that needs the platform and finds
none stops there with one line naming ``cairn up``. The few that need none (``NO_PLATFORM``) run
without it, kept away from the user's own Prefect home all the same.
"""

from __future__ import annotations

import getpass
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup
from typer.exceptions import TyperException

from cairn.cli.args import AppArg, EnvArg, SecretArg
from cairn.cli.output import JsonFlag, console, emit, errors_as_exit

# Commands (or groups of them) that work with no platform up: they start it, stop it, report on
# it, or keep to files under $CAIRN_HOME (the agent; the package store).
NO_PLATFORM = frozenset({"up", "down", "status", "agent", "package"})
_REST = "cairn.rest"


class _Root(TyperGroup):
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        # Called before the root callback with what follows the root's own options: the
        # callback needs the whole command line to know whether the command needs the platform.
        ctx.meta.setdefault(_REST, list(args))
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=_Root, help="cairn: batch releases of containerized apps, as Prefect flows.", no_args_is_help=True,
                  add_completion=False)
secret_app = typer.Typer(help="Secrets kept in Prefect Secret blocks.", no_args_is_help=True)
apps_app = typer.Typer(help="Registered applications.", no_args_is_help=True)
env_app = typer.Typer(help="Environments of an application.", no_args_is_help=True)
app.add_typer(secret_app, name="secret")
app.add_typer(apps_app, name="app")
app.add_typer(env_app, name="env")


@app.callback()
def root(ctx: typer.Context, api: Annotated[str | None, typer.Option(
        "--api", metavar="URL", help="The platform's Prefect API. Default: $CAIRN_API_URL, $PREFECT_API_URL, "
        "else the server `cairn up` started ($CAIRN_HOME/platform.json).")] = None) -> None:
    """cairn: batch releases of containerized apps, as Prefect flows."""
    from cairn.controlplane import connection

    rest: list[str] = ctx.meta.get(_REST, [])
    if not _needs_platform(ctx, rest):
        connection.isolate()
        return
    with errors_as_exit("--json" in _own_args(rest)):
        connection.connect(api)


def _own_args(args: list[str]) -> list[str]:
    """The command's arguments before a ``--`` (after it they belong to a program, as in exec)."""
    return args[: args.index("--")] if "--" in args else args


def _needs_platform(ctx: typer.Context, rest: list[str]) -> bool:
    """Whether the command ``rest`` names runs against the platform. Asking for help never does,
    nor does a command line click will refuse (it says why, and that comes first)."""
    command: Any = ctx.command
    args, path = list(rest), []
    while isinstance(command, TyperGroup):
        if not args or args[0].startswith("-"):
            return False  # a group's own help (no_args_is_help), or its options
        sub = command.get_command(ctx, args[0])
        if sub is None:
            return False
        path.append(args[0])
        command, args = sub, args[1:]
    if not path or path[0] in NO_PLATFORM or "--help" in _own_args(args):
        return False
    try:
        with command.make_context(path[-1], list(args), parent=ctx):
            pass
    except TyperException:  # a usage error (Typer's click): click reports it when the command runs
        return False
    return True


@secret_app.command("set")
def secret_set(name: SecretArg) -> None:
    """Store a secret. The value is read from stdin or a hidden prompt, never from the command line."""
    from cairn.errors import ConfigError

    with errors_as_exit():
        value = getpass.getpass(f"value for {name}: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\n")
        if not value:
            raise ConfigError.single("value", "", "the secret's value is empty; pipe it on stdin or type it at the prompt")
        from cairn.blocks.store import set_secret

        set_secret(name, value)
    console.print(f"secret [bold]{name}[/] saved")


@app.command("apply")
def apply_file(
    file: Annotated[Path, typer.Option("-f", "--file", help="Configuration file (YAML).")],
    as_json: JsonFlag = False,
) -> None:
    """Validate a whole configuration file, then save its clusters, apps and environments."""
    with errors_as_exit(as_json):
        from cairn.blocks import store
        from cairn.configfile import load_file

        config = load_file(file)
        changes = store.apply(config)
    emit(
        [{"kind": c.kind, "name": c.name, "action": c.action} for c in changes],
        as_json,
        _print_changes,
    )


def _print_changes(rows: list[dict[str, str]]) -> None:
    for r in rows:
        console.print(f"{r['kind']} [bold]{r['name']}[/] {r['action']}")


@apps_app.command("list")
def app_list(as_json: JsonFlag = False) -> None:
    """Registered applications and their environments."""
    with errors_as_exit(as_json):
        from cairn.blocks import store
        from cairn.blocks.models import AppBlock, EnvironmentBlock

        env_names = set(store.list_block_names(EnvironmentBlock))
        rows = []
        for name in store.list_block_names(AppBlock):
            block = store.load_app(name)
            envs = [e for e in ("production", "test") if EnvironmentBlock.document_name(name, e) in env_names]
            rows.append({"name": name, "deploy_type": block.deploy_type, "business_type": block.business_type,
                         "description": block.description, "environments": envs})

    def render(rows: list[dict]) -> None:
        table = Table("app", "deploy type", "business type", "environments", "description")
        for r in rows:
            table.add_row(r["name"], r["deploy_type"], r["business_type"], ", ".join(r["environments"]), r["description"])
        console.print(table)

    emit(rows, as_json, render)


@env_app.command("show")
def env_show(app_name: AppArg, env: EnvArg, as_json: JsonFlag = False) -> None:
    """The stored configuration of one environment (secret values are never shown: only their names)."""
    with errors_as_exit(as_json):
        from cairn.blocks import store

        block = store.load_environment(app_name, env)
        data = {"app": block.app, "environment": block.environment, "spec": block.spec.model_dump(mode="json")}

    def render(d: dict) -> None:
        import yaml

        console.print(f"[bold]{d['app']}[/] / [bold]{d['environment']}[/]")
        console.print(yaml.safe_dump(d["spec"], sort_keys=False), highlight=False, markup=False)

    emit(data, as_json, render)


@env_app.command("diff")
def env_diff(app_name: AppArg, env: EnvArg, as_json: JsonFlag = False) -> None:
    """The stored configuration against what the environment runs now (its last completed order):
    what the next order would change besides its version. Secret references: only that they changed."""
    with errors_as_exit(as_json):
        from cairn import diff
        from cairn.blocks import store
        from cairn.images.defaults import qualify
        from cairn.orders.revisions import running

        block = store.load_environment(app_name, env)
        now = running(app_name, env)
        # As an order would store it: a short image name qualified with the default registry.
        stored = block.spec.model_copy(update={"image": str(qualify(block.spec.image, "image"))})
        fields = diff.spec_changes(now.spec.model_dump(mode="json") if now else None, stored.model_dump(mode="json"), prefix="spec")
        data = {"app": app_name, "environment": env, "against": {"revision": now.digest, "version": now.version} if now else None,
                "fields": [c.as_dict() for c in fields]}

    def render(d: dict) -> None:
        from cairn.cli.release import render_changes

        render_changes(d, title="the stored configuration against what runs")

    emit(data, as_json, render)


def _register_subcommands() -> None:
    from cairn.cli import build, controlplane, package, release

    build.register(app)
    release.register(app)
    package.register(app)
    controlplane.register(app, env_app)


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
