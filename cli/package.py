"""``cairn package add|list``: code packages in the content-addressed store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cairn.cli.args import AppArg, VersionArg
from cairn.cli.output import JsonFlag, console, emit, errors_as_exit

package_app = typer.Typer(help="Code packages: reproducible archives a release order ships.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(package_app, name="package")


@package_app.command("add")
def add(app: AppArg, version: VersionArg, directory: Annotated[Path, typer.Argument(metavar="DIR")], as_json: JsonFlag = False) -> None:
    """Pack DIR reproducibly and store it as APP's VERSION (same tree, same digest)."""
    with errors_as_exit(as_json):
        from dataclasses import asdict

        from cairn import packages

        record = packages.add(app, version, packages.pack_bytes(directory), {"dir": str(directory.resolve())})
    emit(asdict(record), as_json, lambda r: console.print(f"package {r['app']} {r['version']} sha256:{r['digest']}"))


@package_app.command("list")
def list_cmd(app: AppArg, as_json: JsonFlag = False) -> None:
    """Packages of APP, oldest first."""
    from dataclasses import asdict

    from cairn import packages

    rows = [asdict(r) for r in packages.list_packages(app)]

    def render(rows: list[dict]) -> None:
        table = Table("version", "digest", "size", "source")
        for r in rows:
            table.add_row(r["version"], r["digest"][:16], str(r["size"]), str(r["source"]))
        console.print(table)

    emit(rows, as_json, render)
