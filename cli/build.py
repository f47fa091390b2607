"""``cairn build APP --ref REF [--release ENV]``: a run of the ``build`` deployment, then optionally a release order.

The build runs on the worker like every other flow; the CLI waits for it, reports the package
(version ``<ref-sanitized>-<commit[:12]>`` and digest) and, with ``--release``, starts a release
order of that package through the same ``actions.create_order`` as ``cairn release create``.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cairn.cli.args import AppArg, checked, environment_problem
from cairn.cli.output import JsonFlag, console, emit, errors_as_exit
from cairn.plan import PauseMode

# The flow's clone can outlast the build command's own timeout; this is the margin the CLI allows.
CLONE_MARGIN_S = 300


def register(root: typer.Typer) -> None:
    root.command("build")(build)


def build(
    app_name: AppArg,
    ref: Annotated[str | None, typer.Option("--ref", "-r", help="Branch, tag or full commit id; default: the source's ref.")] = None,
    release: Annotated[str | None, typer.Option("--release", callback=checked(environment_problem),
                                                help="Then ship the package to this environment.")] = None,
    batches: Annotated[int, typer.Option("--batches", "-b", help="Batches of the release order.")] = 2,
    pause_mode: Annotated[PauseMode, typer.Option("--pause-mode", "-p", help="When the release order pauses.")] = PauseMode.FIRST_BATCH,
    as_json: JsonFlag = False,
) -> None:
    """Build APP's code source at REF into a code package (a Prefect flow run); with --release, ship it."""
    with errors_as_exit(as_json):
        from cairn.blocks import store
        from cairn.config import ref_problem
        from cairn.errors import ConfigError
        from cairn.orders import actions

        app_block = store.load_app(app_name)
        source = app_block.source
        if source is None:
            raise ConfigError.single(f"apps[{app_name}].source", None,
                                     "no code source; add source: {repo, ref, build_command, output_dir} and apply again")
        ref = ref or source.ref
        if ref_problem(ref):
            raise ConfigError.single("--ref", ref, ref_problem(ref) or "")
        # Refuse a release that cannot happen before spending a build on it.
        if release is not None:
            if app_block.deploy_type != "code-package":
                raise ConfigError.single("--release", release, f"{app_name} deploys images, not code packages; build without --release")
            store.load_environment(app_name, release)
        record = _run_build(app_name, ref, source.timeout_s + CLONE_MARGIN_S)
        order = actions.create_order(app_name, release, record["version"], batches, pause_mode) if release else None
    emit({"build": record, "order": order}, as_json, _render)


def _run_build(app: str, ref: str, timeout_s: float) -> dict[str, Any]:
    from prefect.deployments import run_deployment

    from cairn import sync
    from cairn.errors import CairnError
    from cairn.orders import tags
    from cairn.orders.actions import ui_url

    run = sync.result(run_deployment("build/build", parameters={"app": app, "ref": ref}, timeout=timeout_s, poll_interval=0.5,
                                     tags=tags.for_kind("build", app), as_subflow=False))
    state = run.state
    if state is None or not state.is_final():
        raise CairnError(f"build run {run.id} did not finish within {timeout_s:.0f}s", hint=ui_url(run.id))
    if not state.is_completed():
        # The flow's exception is its persisted result: raised again here, its kind sets the exit code.
        error = state.result(raise_on_failure=False)
        if not isinstance(error, CairnError):
            error = CairnError(state.message or state.name or "the build failed")
        error.hint = f"{error.hint}; the build run: {ui_url(run.id)}" if error.hint else f"the build run: {ui_url(run.id)}"
        raise error
    record = state.result(raise_on_failure=False)
    if not isinstance(record, dict):
        raise CairnError(f"build run {run.id} completed without a package record", hint=ui_url(run.id))
    return {**record, "run": str(run.id), "url": ui_url(run.id)}


def _render(doc: dict[str, Any]) -> None:
    b = doc["build"]
    console.print(f"package [bold]{b['app']}[/] {b['version']} sha256:{b['digest']}")
    console.print(f"  from {b['source']['ref']} at {b['source']['commit']}; build run {b['url']}", highlight=False)
    order = doc["order"]
    if order:
        console.print(f"release order [bold]{order['id']}[/] ({order['status']}): {order['url']}", highlight=False)
