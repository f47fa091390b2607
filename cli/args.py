"""The command line's name arguments, each checked by the rule of ``cairn.naming`` as it is parsed.

Checked as click parses the command line, so a bad name is refused (exit 2, naming the argument,
the value and the fix) before the root callback looks for the platform and before any URL or
path is built from it: "shop api" is not a platform that is down. A well-formed name that does
not exist is the lookup's to report (exit 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from cairn.naming import dns1123_problem, instance_problem, order_id_problem, secret_name_problem, version_problem

Rule = Callable[[str], str | None]


def refuse_bad(value: str, rule: Rule) -> None:
    """Raise click's usage error (exit 2) when ``value`` breaks ``rule``; the message names the value and the fix."""
    problem = rule(value)
    if problem:
        raise typer.BadParameter(f"{value!r}: {problem}")


def checked(rule: Rule) -> Callable[[str | None], str | None]:
    """A Typer callback applying ``rule`` to an argument or option (None: the option was not given)."""

    def callback(value: str | None) -> str | None:
        if value is not None:
            refuse_bad(value, rule)
        return value

    return callback


def environment_problem(env: str) -> str | None:
    return dns1123_problem(env) and "an environment is production or test"


AppArg = Annotated[str, typer.Argument(metavar="APP", callback=checked(dns1123_problem), help="App name (a DNS-1123 label).")]
EnvArg = Annotated[str, typer.Argument(metavar="ENV", callback=checked(environment_problem), help="production or test.")]
InstanceArg = Annotated[str, typer.Argument(metavar="INSTANCE", callback=checked(instance_problem), help="e.g. shop-api-production-0.")]
VersionArg = Annotated[str, typer.Argument(metavar="VERSION", callback=checked(version_problem))]
SecretArg = Annotated[str, typer.Argument(metavar="NAME", callback=checked(secret_name_problem),
                                          help="Secret name (lowercase, digits, '-').")]
OrderArg = Annotated[str, typer.Argument(metavar="ID", callback=checked(order_id_problem), help="Order id or a unique prefix of it.")]
