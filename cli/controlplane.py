"""``cairn up/down/status``, ``cairn agent ...`` and the instance commands (SPEC 4)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cairn.cli.args import AppArg, EnvArg, InstanceArg, checked
from cairn.cli.output import JsonFlag, console, emit, errors_as_exit
from cairn.naming import instance_problem

if TYPE_CHECKING:
    from cairn.tasks.context import Target

agent_app = typer.Typer(help="The local node agent that owns local instances.", no_args_is_help=True)


def register(root: typer.Typer, env_app: typer.Typer) -> None:
    from cairn.cli.webhook import webhook_app

    root.add_typer(agent_app, name="agent")
    root.add_typer(webhook_app, name="webhook")
    root.command("up")(up)
    root.command("down")(down)
    root.command("status")(status)
    root.command("instances")(instances)
    root.command("traffic")(traffic)
    root.command("events")(events)
    root.command("logs")(logs)
    root.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(exec_cmd)
    root.command("shell")(shell)
    env_app.command("rollback")(env_rollback)


def up(host: Annotated[str, typer.Option("--host", help="Where the Prefect API and UI listen (behind basic auth, also on loopback).")]
       = "127.0.0.1",
       port: Annotated[int | None, typer.Option("--port", help="The API and UI port (default 4200, else a free one).")] = None,
       max_running: Annotated[int | None, typer.Option(
           "--max-running", min=1, help="Flow runs (orders, rollbacks, builds) running at once; more wait for a slot. "
           "Default: 5 per CPU core ($CAIRN_MAX_RUNNING), or what the work pool has (Prefect UI, work pool `cairn`).")] = None,
       as_json: JsonFlag = False) -> None:
    """Start (or reuse) the image registry, the Prefect server, the cairn work pool, deployments and worker, and the local agent."""
    with errors_as_exit(as_json):
        from cairn.controlplane import up as start

        data = start(host=host, port=port, max_running=max_running).to_dict()

    def render(d: dict[str, Any]) -> None:
        console.print(f"Prefect UI: {d['ui']}\nimage registry: {d['registry']}\nworker pid {d['worker_pid']}\nagent: {d['agent']}")
        if d["auth"]:
            # The path, never the secret.
            console.print(f"the API and UI require basic auth: user:password in {d['auth']} (the UI asks for it at login)")
        # Every cairn command finds this platform from $CAIRN_HOME: nothing to export.
        console.print(f"cairn commands use it from any shell ({d['home']}/platform.json); "
                      f"for Prefect's own CLI: export PREFECT_API_URL={d['server']}", highlight=False, soft_wrap=True)

    emit(data, as_json, render)


def down(purge: Annotated[bool, typer.Option("--purge", help="Also stop every local instance.")] = False) -> None:
    """Stop the worker, the server and the agent (instances keep running unless --purge)."""
    with errors_as_exit():
        from cairn.controlplane import down as stop

        stop(purge=purge)
    console.print("platform stopped")


def status(as_json: JsonFlag = False) -> None:
    """What of the platform runs."""
    from cairn.controlplane import processes as platform
    from cairn.runtimes.local import agent_status

    data = {**platform.processes(), "agent": agent_status()}
    emit(data, as_json, lambda d: console.print_json(data=d))


@agent_app.command("start")
def agent_start(as_json: JsonFlag = False) -> None:
    """Start the agent (no-op when running)."""
    with errors_as_exit(as_json):
        from cairn.runtimes.local import start_agent

        data = start_agent()
    emit(data, as_json, lambda d: console.print_json(data=d))


@agent_app.command("stop")
def agent_stop(purge: Annotated[bool, typer.Option("--purge", help="Also stop every instance.")] = False) -> None:
    """Stop the agent; instances keep running (adopted at next start) unless --purge."""
    with errors_as_exit():
        from cairn.runtimes.local import stop_agent

        stop_agent(purge=purge)
    console.print("agent stopped")


@agent_app.command("status")
def agent_status_cmd(as_json: JsonFlag = False) -> None:
    """Whether the agent runs, its pid, socket, instances and cgroup support."""
    from cairn.runtimes.local import agent_status

    emit(agent_status(), as_json, lambda d: console.print_json(data=d))


def _target(app: str, env: str) -> Target:
    from cairn.tasks.context import env_target

    return env_target(app, env)


def instances(app: AppArg, env: EnvArg, as_json: JsonFlag = False) -> None:
    """The environment view: each instance's revision, health, ports, restarts and age."""
    with errors_as_exit(as_json):
        t = _target(app, env)
        rows = [i.to_dict() for i in t.runtime.observe(t.env)]
    now = time.time()

    def render(rows: list[dict[str, Any]]) -> None:
        table = Table("instance", "revision", "phase", "ready", "address", "ports", "restarts", "age", "reason")
        for r in rows:
            age = f"{now - r['started_at']:.0f}s" if r.get("started_at") else "-"
            ports = ", ".join(f"{k}->{v}" for k, v in r["ports"].items())
            table.add_row(r["name"], r["revision"][:12], r["phase"], "yes" if r["ready"] else "no", r.get("address") or "-",
                          ports, str(r["restarts"]), age, r.get("reason") or "")
        console.print(f"{app}/{env}: {len(rows)} instances")
        console.print(table)

    emit(rows, as_json, render)


def traffic(app: AppArg, env: EnvArg, as_json: JsonFlag = False) -> None:
    """The environment's load balancer (local) or Service (kubernetes): listeners, backends and their state."""
    from cairn.runtime import TrafficView

    with errors_as_exit(as_json):
        t = _target(app, env)
        view = t.runtime.traffic(t.env)

    def count(value: int | None) -> str:
        return "-" if value is None else str(value)  # Kubernetes counts no connections

    def render(v: TrafficView) -> None:
        if not v.listeners:
            console.print(f"{app}/{env}: no load balancer listener (no mapped port, or no instance runs)")
        for lis in v.listeners:
            where = lis.address if lis.listening else f"{lis.address} NOT LISTENING: {lis.error}"
            where += "".join(f", {extra}" for extra in lis.also)
            counted = f": {lis.open} open, {lis.connections} connections served" if lis.connections is not None else ""
            console.print(f"{app}/{env} {where} ({v.policy}){counted}"
                          + (f", {lis.dropped} dropped (no backend)" if lis.dropped else ""))
            table = Table("instance", "backend", "state", "open", "connections", "refused")
            for b in lis.backends:
                style = {"ready": "green", "draining": "yellow", "terminating": "yellow"}.get(b.state, "dim")
                table.add_row(b.instance, b.address, b.state, count(b.open), count(b.connections), count(b.refused), style=style)
            console.print(table)
        if v.counts:
            console.print(f"counted in {v.counts} (the balancer is TCP and parses no request)")
        if v.drain_s is not None:
            console.print(f"states from the EndpointSlices; cairn takes a pod out of the Service, waits until they drop it, "
                          f"then {v.drain_s:g}s more, before deleting it")

    emit(view.to_dict(), as_json, lambda _: render(view))


def events(app: AppArg, env: EnvArg, instance: Annotated[str | None, typer.Option("--instance", "-i", callback=checked(instance_problem))] = None,
           as_json: JsonFlag = False) -> None:
    """System events of the environment's instances; Warning ones marked."""
    with errors_as_exit(as_json):
        t = _target(app, env)
        rows = [e.to_dict() for e in t.runtime.events(t.env, instance=instance)]

    def render(rows: list[dict[str, Any]]) -> None:
        table = Table("time", "type", "instance", "reason", "message")
        for r in rows:
            style = "bold yellow" if r["type"] == "Warning" else ""
            table.add_row(time.strftime("%H:%M:%S", time.localtime(r["time"])), r["type"], r["instance"], r["reason"], r["message"], style=style)
        console.print(table)

    emit(rows, as_json, render)


def logs(app: AppArg, env: EnvArg, instance: InstanceArg,
         follow: Annotated[bool, typer.Option("-f", "--follow")] = False, tail: Annotated[int | None, typer.Option("--tail")] = None) -> None:
    """An instance's logs (stdout/stderr with timestamps); -f keeps following."""
    with errors_as_exit():
        t = _target(app, env)
        try:
            for line in t.runtime.logs(t.env, instance, follow=follow, tail=tail):
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except KeyboardInterrupt:
            pass


def exec_cmd(ctx: typer.Context, app: AppArg, env: EnvArg, instance: InstanceArg) -> None:
    """Run a command inside an instance: cairn exec APP ENV INSTANCE -- CMD..."""
    command = [a for a in ctx.args if a != "--"] or ["sh", "-c", "true"]
    with errors_as_exit():
        from cairn.orders.actions import who

        t = _target(app, env)
        result = t.runtime.exec(t.env, instance, command, user=who())
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    raise typer.Exit(result.exit_code)


def shell(app: AppArg, env: EnvArg, instance: InstanceArg) -> None:
    """An interactive shell inside an instance (its env, paths and cwd)."""
    with errors_as_exit():
        from cairn.orders.actions import who

        t = _target(app, env)
        code = t.runtime.shell(t.env, instance, user=who())
    raise typer.Exit(code)


def env_rollback(app: AppArg, env: EnvArg, as_json: JsonFlag = False) -> None:
    """Return the environment to the last completed revision (closing an active order first)."""
    with errors_as_exit(as_json):
        from cairn.orders import actions

        data = actions.rollback(app=app, env=env)
    emit(data, as_json, lambda d: console.print(f"rolled back ({d['rollback']})"))
