"""What a task needs to reach an environment's instances: its runtime, its EnvRef, its secrets."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cairn.blocks import documents
from cairn.config import ClusterSpec
from cairn.errors import ConfigError, TemporaryError
from cairn.revision import Revision
from cairn.runtime import EnvRef, Runtime
from cairn.runtimes import connect

if TYPE_CHECKING:
    from prefect.states import State


@dataclass(frozen=True)
class Target:
    runtime: Runtime
    env: EnvRef


_runtimes: dict[str, Runtime] = {}  # per process: a cluster's runtime, connected once
_runtimes_lock = threading.Lock()


def _runtime(cluster_name: str, document: tuple[ClusterSpec, str | None] | None = None) -> Runtime:
    """The cluster's runtime, connected at the first use in this process. ``document`` is the
    cluster's spec and kubeconfig when the caller has read them already (``documents``)."""
    with _runtimes_lock:
        found = _runtimes.get(cluster_name)
    if found is None:
        # Read over the REST API (``documents``), not as a Block: `cairn instances` and the other
        # instance commands come through here and must not import Prefect.
        spec, kubeconfig = document or documents.cluster(cluster_name)
        connected = connect(spec, kubeconfig=kubeconfig)
        with _runtimes_lock:
            found = _runtimes.setdefault(cluster_name, connected)
    return found


def target(revision: Revision, *, cluster_document: tuple[ClusterSpec, str | None] | None = None) -> Target:
    return Target(_runtime(revision.spec.cluster, cluster_document), EnvRef(revision.spec.cluster, revision.app, revision.environment))


def secrets_for(revision: Revision) -> dict[str, str]:
    """secret_env variable -> value, read from the Secret blocks at apply time, never stored."""
    from cairn.blocks import store

    return {var: store.get_secret(name) for var, name in revision.spec.secret_env.items()}


def pull_login_for(revision: Revision) -> tuple[str, str] | None:
    """The registry login of ``image_pull_secret``, read at apply time, never stored."""
    secret = revision.spec.image_pull_secret
    return None if secret is None else pull_login(secret)


def pull_login(secret: str, field: str = "image_pull_secret") -> tuple[str, str]:
    """The login in the Secret block ``secret`` (named by ``field``): JSON ``{"username", "password"}``.
    The value never reaches a message (a malformed one is described, not quoted)."""
    import json

    from cairn.blocks import store

    try:
        data = json.loads(store.get_secret(secret))
    except ValueError:
        raise ConfigError.single(field, secret, 'the secret must hold JSON {"username": ..., "password": ...}') from None
    if not (isinstance(data, dict) and isinstance(data.get("username"), str) and isinstance(data.get("password"), str)
            and data["username"]):
        raise ConfigError.single(field, secret, 'the secret must hold JSON {"username": ..., "password": ...} (two strings)')
    return data["username"], data["password"]


def retry_temporary(task: object, task_run: object, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only errors that may pass on retry."""
    try:
        state.result()
    except TemporaryError:
        return True
    except Exception:  # noqa: BLE001 - every other failure is permanent: not retried
        return False
    return False


def env_target(app: str, environment: str) -> Target:
    """The runtime and EnvRef of a stored environment (what runs now, whatever its revision)."""
    spec = documents.environment_spec(app, environment)
    return Target(_runtime(spec.cluster), EnvRef(spec.cluster, app, environment))
