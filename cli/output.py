"""How the CLI speaks: Rich for people, stable JSON for scripts, one exit code per error kind."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cairn.errors import CairnError

console = Console()
err_console = Console(stderr=True)
# Every command that prints takes --json: one option, one help text.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON with stable keys, for scripts.")]


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    else:
        render(data)


@contextmanager
def errors_as_exit(as_json: bool = False) -> Iterator[None]:
    """Turn a CairnError into a message on stderr (or JSON on stdout) and its exit code."""
    try:
        yield
    except CairnError as exc:
        _quiet_prefect_shutdown()
        if as_json:
            sys.stdout.write(json.dumps(exc.to_dict(), indent=2) + "\n")
        else:
            err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
            if exc.hint:
                err_console.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    _quiet_prefect_shutdown()


def _quiet_prefect_shutdown() -> None:
    """Prefect's event and log workers warn "Still processing items" while they flush at exit;
    that is noise on a terminal, not news, so only their errors are shown. Their loggers are named
    after the service class (``prefect._internal.concurrency.services``), not under ``prefect``."""
    import logging

    for name in ("prefect._internal.concurrency", "EventsWorker", "APILogWorker"):
        logging.getLogger(name).setLevel(logging.ERROR)
