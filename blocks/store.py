"""Reading and writing cairn's blocks: apply a whole configuration, load what a release needs.

``apply`` validates everything first (the file, references to stored clusters, that every
named secret exists) and only then saves, so a bad file stores nothing. Saving skips a block
whose content did not change, so applying the same file twice changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, TypeVar

from prefect.blocks.core import Block
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from pydantic import SecretStr

from cairn.blocks.models import AppBlock, ClusterBlock, EnvironmentBlock, RevisionBlock
from cairn.config import CairnConfig
from cairn.configfile import check_references
from cairn.errors import ConfigError, NotFound
from cairn.revision import Revision

B = TypeVar("B", bound=Block)


@dataclass(frozen=True)
class Change:
    kind: Literal["cluster", "app", "environment"]
    name: str
    action: Literal["created", "updated", "unchanged"]


def apply(config: CairnConfig) -> list[Change]:
    problems: list = []
    # A stored cluster the file uses is read whole: its allowed_host_paths judge the file's host paths.
    in_file = {c.name for c in config.clusters}
    used = {env.cluster for app in config.apps for env in app.environments.values()} - in_file
    known = [load_cluster(name).spec() if name in used else name for name in list_block_names(ClusterBlock)]
    try:
        check_references(config, known_clusters=known)
    except ConfigError as exc:
        problems += exc.problems
    problems += _secret_problems(config)
    if problems:
        raise ConfigError(problems)
    planned: list[tuple[str, str, Block]] = []
    for cluster in config.clusters:
        kubeconfig = get_secret(cluster.kubeconfig_secret) if cluster.kubeconfig_secret else None
        planned.append(("cluster", cluster.name, ClusterBlock.from_spec(cluster, kubeconfig)))
    for app in config.apps:
        planned.append(("app", app.name, AppBlock(**app.model_dump(exclude={"environments"}))))
        for env_name, env in app.environments.items():
            name = EnvironmentBlock.document_name(app.name, env_name)
            planned.append(("environment", name, EnvironmentBlock(app=app.name, environment=env_name, spec=env)))
    return [_save_if_changed(kind, name, block) for kind, name, block in planned]  # type: ignore[arg-type]


def _secret_problems(config: CairnConfig) -> list[tuple[str, str, str]]:
    problems = []
    for cluster in config.clusters:
        if cluster.kubeconfig_secret and not secret_exists(cluster.kubeconfig_secret):
            problems.append((f"clusters[{cluster.name}].kubeconfig_secret", cluster.kubeconfig_secret,
                             f"no such secret; create it with: cairn secret set {cluster.kubeconfig_secret} < kubeconfig"))
    for app in config.apps:
        for env_name, env in app.environments.items():
            for var, secret in env.secret_env.items():
                if not secret_exists(secret):
                    problems.append((f"apps[{app.name}].environments.{env_name}.secret_env.{var}", secret,
                                     f"no such secret; create it with: cairn secret set {secret}"))
    return problems


def _save_if_changed(kind: Literal["cluster", "app", "environment"], name: str, block: Block) -> Change:
    existing = _load_or_none(type(block), name)
    if existing is not None and _content(existing) == _content(block):
        return Change(kind, name, "unchanged")
    block.save(name, overwrite=True)
    return Change(kind, name, "created" if existing is None else "updated")


def _content(block: Block) -> dict:
    data = {k: v for k, v in block.model_dump(mode="json").items() if not k.startswith("_") and k != "block_type_slug"}
    for key, value in block:
        if isinstance(value, SecretStr):
            data[key] = value.get_secret_value()
    return data


def _load_or_none(block_type: type[B], name: str) -> B | None:
    try:
        return block_type.load(name, validate=True)  # type: ignore[return-value]
    except ValueError as exc:
        if "Unable to find block document" in str(exc):
            return None
        raise


def load(block_type: type[B], name: str, *, what: str) -> B:
    block = _load_or_none(block_type, name)
    if block is None:
        raise NotFound(f"no {what} named {name!r}", hint="cairn apply -f FILE registers it; cairn app list shows what exists")
    return block


def list_block_names(block_type: type[Block]) -> list[str]:
    with get_client(sync_client=True) as client:
        try:
            docs = client.read_block_documents_by_type(block_type.get_block_type_slug(), include_secrets=False)
        except Exception as exc:  # the type is not registered yet: nothing stored
            if "404" in str(exc) or "not found" in str(exc).lower():
                return []
            raise
    return sorted(doc.name for doc in docs if doc.name)


def load_environment(app: str, environment: str) -> EnvironmentBlock:
    return load(EnvironmentBlock, EnvironmentBlock.document_name(app, environment), what=f"environment {environment} of app {app}")


def load_app(app: str) -> AppBlock:
    return load(AppBlock, app, what="app")


def load_cluster(name: str) -> ClusterBlock:
    return load(ClusterBlock, name, what="cluster")


def save_revision(revision: Revision) -> None:
    """Store a revision once. Orders racing to snapshot the same revision all succeed: the
    content is the same whoever wins, so a failed save is retried as a load."""
    import tenacity

    name = RevisionBlock.document_name(revision.digest)

    def stored() -> None:
        if _load_or_none(RevisionBlock, name) is None:
            RevisionBlock(revision=revision).save(name, overwrite=True)

    try:
        tenacity.Retrying(stop=tenacity.stop_after_attempt(10), wait=tenacity.wait_incrementing(0.1, 0.1), reraise=True)(stored)
    except Exception:  # noqa: BLE001 - whatever the last save said, a stored revision is all that counts
        load(RevisionBlock, name, what="revision")


def load_revision(digest: str) -> Revision:
    return load(RevisionBlock, RevisionBlock.document_name(digest), what="revision").revision


def secret_exists(name: str) -> bool:
    return _load_or_none(Secret, name) is not None


def get_secret(name: str) -> str:
    secret = load(Secret, name, what="secret")
    # The stored text as it was set: Secret.get() parses a JSON string (a login's
    # {"username", "password"}) into a dict, whose str() is Python's repr, not that JSON.
    value = secret.value.get_secret_value()
    return value if isinstance(value, str) else json.dumps(value)


def set_secret(name: str, value: str) -> None:
    Secret(value=value).save(name, overwrite=True)
