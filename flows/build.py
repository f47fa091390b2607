"""The build: one flow run turns an app's code source at a git ref into a code package.

Clone (on the worker), build (in a container: ``cairn.tasks.build``), pack+store run in a fresh
workspace that is removed afterwards; only a build that succeeded stores anything, so a failed
one leaves the package store as it was. The package's
version name is ``<ref-sanitized>-<commit[:12]>`` (``cairn.packages.build_version``); its digest
names it too. A release order of it is the CLI's next step (``cairn build --release ENV``).
"""

from __future__ import annotations

import shutil
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from cairn import packages
from cairn.blocks import store
from cairn.config import public_repo, ref_problem
from cairn.errors import ConfigError
from cairn.flows.engine import current_run
from cairn.paths import cairn_home
from cairn.tasks.build import clone, pack_and_store, report_markdown, run_build


@flow(name="build", flow_run_name="build-{app}-{ref}", persist_result=True, validate_parameters=True)
def build(
    app: Annotated[str, Field(title="App", description="A registered app with a code source.")],
    ref: Annotated[str, Field(title="Ref", description="Branch, tag or full commit id; empty means the source's ref.")] = "",
) -> dict[str, Any]:
    """Build ``app`` at ``ref`` and store the result as a code package."""
    source = store.load_app(app).source
    if source is None:
        raise ConfigError.single(f"apps[{app}].source", None, "no code source; add source: {repo, ref, build_command, output_dir}")
    ref = ref or source.ref
    if ref_problem(ref):
        raise ConfigError.single("ref", ref, ref_problem(ref) or "")
    run_id, _ = current_run()
    workspace = cairn_home() / "builds" / f"{app}-{run_id}"
    try:
        checkout = clone(source.repo, ref, str(workspace), source.credentials_secret)
        version = packages.build_version(ref, checkout["commit"])
        built = run_build(str(workspace), source, checkout["committed_at"])
        origin = {"repo": public_repo(source.repo), "ref": ref, "commit": checkout["commit"]}
        record = pack_and_store(app, version, built["output"], origin)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    create_markdown_artifact(key=f"build-{app}", markdown=report_markdown(record, built["log"]),
                             description=f"{app} {version} sha256:{record['digest'][:12]}")
    get_run_logger().info("built %s %s sha256:%s from %s at %s in %s", app, version, record["digest"], ref, checkout["commit"],
                          built["image"])
    return record
