"""A secret value never reaches anything a release order leaves behind, on either runtime.

Three real orders (the release flow, the worker, the runtime) of an app whose secret_env holds a
fresh random password and a PEM key: one whose app prints both on start, one whose failing health
check quotes them, one whose failing PostStart hook prints them. Then every place the platform
writes is searched for the password, the key and each line of the key's body: the Prefect
database file and its WAL (Prefect encrypts block documents at rest, so not even the Secret block
shows), each table and column of that database, flow-run and task-run states with their messages,
artifacts, logs and events as the API serves them, what the runtime shows (instances, events,
logs), every file of the platform under $CAIRN_HOME (the local agent's state directory with the
instances' console logs, process logs, state files) and, on Kubernetes, what cairn writes to the
cluster (its own Events, its pods' metadata). The cluster's own copies (the kubelet keeps a
container's output in its logs and termination message, and quotes an exec probe in its events)
are counted apart: they are where Kubernetes keeps what the app wrote, not cairn's to change.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.plan import PauseMode
from cairn.status import Status
from tests.behaviour.conftest import k8s_images  # noqa: F401 - the real node pulls the session's images

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
BLOCK, KEY_BLOCK = "leak-db-password", "leak-tls-key"
K8S_NAMESPACE = "cairn-leak"
SAYS = 'echo "connecting with password $DB_PASSWORD"; printf "%s\\n" "$TLS_KEY"'


def secrets() -> dict[str, str]:
    """A fresh password and PEM key, stored as the Secret blocks the environments name."""
    from cairn.blocks import store

    body = base64.b64encode(os.urandom(96)).decode()
    values = {"DB_PASSWORD": f"s3cr3t-{uuid.uuid4().hex}",
              "TLS_KEY": "\n".join(["-----BEGIN PRIVATE KEY-----", body[:64], body[64:], "-----END PRIVATE KEY-----"])}
    store.set_secret(BLOCK, values["DB_PASSWORD"])
    store.set_secret(KEY_BLOCK, values["TLS_KEY"])
    return values


def needles(values: dict[str, str]) -> list[str]:
    """What must be found nowhere: the password, the key, each line of the key's body."""
    return [values["DB_PASSWORD"], values["TLS_KEY"], *(line for line in values["TLS_KEY"].splitlines() if not line.startswith("-----"))]


def register(clusters: list[dict[str, Any]], names: tuple[str, str], image: str) -> list[tuple[str, str]]:
    """Three environments (of two apps), each leaking the secrets its own way if cairn lets it:
    (app, environment) of the printing app, the quoting check and the printing hook. ``names``
    are the clusters the first two run on."""
    from cairn.blocks import store
    from cairn.configfile import load_data

    app, other = f"leak-{uuid.uuid4().hex[:8]}", f"leakhook-{uuid.uuid4().hex[:8]}"
    base: dict[str, Any] = {
        "cluster": names[0], "image": image, "instances": 2, "cpu": 0.1, "memory_mb": 96,
        "ports": [{"container_port": 8080}], "secret_env": {"DB_PASSWORD": BLOCK, "TLS_KEY": KEY_BLOCK},
        "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 40},
        "lifecycle": {"termination_grace_period_s": 2},
    }
    prints = {**base, "command": ["sh", "-c", f"{SAYS}; exec python3 /acs/code/app.py"]}
    # Said last: a reason keeps the end of what a check or a hook printed.
    check = {**base, "cluster": names[1], "health_check": {
        "exec": {"command": ["sh", "-c", f'{SAYS} >&2; echo "db refused password $DB_PASSWORD" >&2; exit 1']},
        "period_s": 0.5, "timeout_s": 2, "failure_threshold": 3}}
    hook = {**base, "lifecycle": {"termination_grace_period_s": 2,
                                  "post_start": {"exec": {"command": ["sh", "-c", f'{SAYS} >&2; echo "hook saw $DB_PASSWORD" >&2; exit 7']}}}}
    store.apply(load_data({"clusters": clusters,
                           "apps": [{"name": app, "deploy_type": "image", "environments": {"production": prints, "test": check}},
                                    {"name": other, "deploy_type": "image", "environments": {"production": hook}}]}))
    return [(app, "production"), (app, "test"), (other, "production")]


def ship(app: str, env: str) -> dict[str, Any]:
    from cairn.orders import actions

    order = actions.create_order(app, env, "v1", 1, PauseMode.NONE)["id"]
    return actions.wait_for(order, {Status.COMPLETED, Status.FAILED}, timeout_s=300)


def every(page: Any) -> list[Any]:
    """All the rows of a paged read (the API serves at most 200 at a time)."""
    rows: list[Any] = []
    while batch := page(len(rows)):
        rows += batch
        if len(batch) < 200:
            break
    return rows


def api_texts(orders: list[str]) -> dict[str, str]:
    """What the API serves about the orders: every state with its message, artifacts, logs, events."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    ids = [uuid.UUID(o) for o in orders]
    out: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for run_id in ids:
            run = client.read_flow_run(run_id)
            out[f"flow run {run_id}"] = run.model_dump_json()
            out[f"states of {run_id}"] = "\n".join(s.model_dump_json() for s in client.read_flow_run_states(run_id))
            for task in client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))):
                out[f"task run {task.id}"] = task.model_dump_json()
        out["logs"] = "\n".join(log.model_dump_json() for log in every(
            lambda offset: client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=offset)))
        out["artifacts"] = "\n".join(a.model_dump_json() for a in every(lambda offset: client.read_artifacts(limit=200, offset=offset)))
        events = client.request("POST", "/events/filter", json={"limit": 50}).json()
        pages = [events]
        while events.get("next_page"):  # a full URL carrying the page token
            events = httpx.get(events["next_page"], timeout=30).json()
            pages.append(events)
        out["events"] = "\n".join(str(e) for page in pages for e in page.get("events", []))
    return out


def files_holding(value: bytes, root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            if value in path.read_bytes():
                found.append(str(path))
        except OSError:
            continue
    return found


def database_columns(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        return sum(len(list(conn.execute(f'pragma table_info("{t}")'))) for t in tables)


def database_rows_holding(db: Path, value: str) -> list[str]:
    """Every table and column of the Prefect database holding ``value``."""
    found = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            columns = [r[1] for r in conn.execute(f'pragma table_info("{table}")')]
            for column in columns:
                hits = conn.execute(f'select count(*) from "{table}" where instr(cast("{column}" as text), ?) > 0', (value,)).fetchone()[0]
                if hits:
                    found.append(f"{table}.{column} ({hits} rows)")
    return found


def release_and_search(where: list[tuple[str, str]], values: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    """Ship the three environments, check each leaked where it could, and return every place
    searched (name -> text) beside the platform's files and database, which are searched here."""
    from cairn.tasks.context import env_target

    printed, checked, hooked = (ship(app, env) for app, env in where)
    assert printed["status"] == "completed", printed["message"]
    assert checked["status"] == "failed" and "db refused password ***" in checked["message"], checked["message"]
    assert hooked["status"] == "failed" and "hook saw ***" in hooked["message"], hooked["message"]

    # The app did print them, so the searches below look where a leak would be: its log shows the mask.
    t = env_target(*where[0])
    instance = t.runtime.observe(t.env)[0]
    logged = list(t.runtime.logs(t.env, instance.name))
    assert any(line.endswith("connecting with password ***") for line in logged), "the app printed its password"
    assert sum(line.endswith("***") for line in logged) >= 3, "and the lines of its key"

    texts = api_texts([printed["id"], checked["id"], hooked["id"]])
    assert "db refused password ***" in texts["logs"] + texts[f"states of {checked['id']}"], "the searches see the failures"
    assert texts["events"] and texts["artifacts"], "the search must look at events and artifacts"
    for app, env in where:
        t = env_target(app, env)
        shown = t.runtime.observe(t.env)
        texts[f"instances of {app}/{env}"] = "\n".join(str(i.to_dict()) for i in shown)
        texts[f"events of {app}/{env}"] = "\n".join(f"{e.reason} {e.message}" for e in t.runtime.events(t.env))
        texts[f"logs of {app}/{env}"] = "\n".join(line for i in shown for line in t.runtime.logs(t.env, i.name))
    return {**texts, **(extra or {})}


def search(texts: dict[str, str], values: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """Where any needle was found, and how many places were searched: each text, each column of
    each table of the database, each file under $CAIRN_HOME."""
    home = Path(os.environ["CAIRN_HOME"])
    db = home / "prefect" / "prefect.db"
    assert db.exists() and (home / "agent").is_dir(), f"the platform's files are not where they should be under {home}"
    leaks = [where for where, text in texts.items() for n in needles(values) if n in text]
    columns = database_columns(db)
    files = [p for p in sorted(home.rglob("*")) if p.is_file() and not p.is_symlink()]
    for n in needles(values):
        leaks += [f"database {row}" for row in database_rows_holding(db, n)]
        leaks += [f"file {p}" for p in files_holding(n.encode(), home)]
    return sorted(set(leaks)), {"texts": len(texts), "database columns": columns, "files": len(files)}


def places(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} places ({', '.join(f'{n} {what}' for what, n in counts.items())})"


def test_nothing_an_order_leaves_behind_holds_the_secret(platform: str) -> None:
    values = secrets()
    where = register([{"name": "leak-a"}, {"name": "leak-b"}], ("leak-a", "leak-b"), "cairn/demo-app:latest")
    leaks, searched = search(release_and_search(where, values), values)
    print(f"local: {len(leaks)} leaks in {places(searched)} searched")
    assert all(searched.values()), "the search must have looked at the platform's texts, columns and files"
    assert not leaks, f"the secret values were found in: {leaks}"


@pytest.mark.k8s
def test_nothing_an_order_leaves_behind_holds_the_secret_on_kubernetes(platform: str, k8s_cluster: Any,
                                                                       k8s_images: Any) -> None:  # noqa: F811
    from cairn.blocks import store

    k8s = k8s_cluster
    values = secrets()
    store.set_secret("k8s-a-kubeconfig", Path(k8s.kubeconfig_a).read_text())
    # Production and test of an app are on different clusters: two names of cluster a's one namespace.
    clusters = [{"name": name, "runtime": "kubernetes", "kubeconfig_secret": "k8s-a-kubeconfig",
                 "context": k8s.context_a, "namespace": K8S_NAMESPACE} for name in ("leak-k8s", "leak-k8s-too")]
    where = register(clusters, ("leak-k8s", "leak-k8s-too"), "cairn/demo-app:v1")
    try:
        texts = release_and_search(where, values)
        cairns, clusters = cluster_texts(k8s, [app for app, _ in where])
        leaks, searched = search({**texts, **cairns}, values)
        theirs = sorted({where for where, text in clusters.items() for n in needles(values) if n in text})
    finally:  # the real node has 2 cores: leave nothing behind for the next suite
        for app in {app for app, _ in where}:
            k8s.kubectl("a", "-n", K8S_NAMESPACE, "delete", "pods", "-l", f"cairn.dev/app={app}", "--grace-period=0",
                        "--force", "--wait=false", check=False)
    print(f"kubernetes: {len(leaks)} leaks in {places(searched)} searched ({len(cairns)} texts of them cairn's writes to the "
          f"cluster); the cluster's own copies: {len(theirs)} of {len(clusters)} ({', '.join(theirs)})")
    assert cairns and all(searched.values()), "the search must have looked at cairn's writes to the cluster and the platform"
    assert not leaks, f"the secret values were found in: {leaks}"


def cluster_texts(k8s: Any, apps: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """What cairn wrote to the cluster (its own Events, its pods' metadata, ConfigMaps), and what
    the cluster wrote itself about the apps' pods (the kubelet's events, the pods' statuses)."""
    events = k8s.kubectl_json("a", "get", "events", "-n", K8S_NAMESPACE)["items"]
    pods = k8s.kubectl_json("a", "get", "pods", "-n", K8S_NAMESPACE)["items"]
    configmaps = k8s.kubectl_json("a", "get", "configmaps", "-n", K8S_NAMESPACE)["items"]
    about = [e for e in events if any(e["involvedObject"]["name"].startswith(f"{a}-") for a in apps)]
    ours = {f"cairn's event {e['metadata']['name']}": json.dumps(e) for e in about if (e.get("source") or {}).get("component") == "cairn"}
    ours |= {f"metadata of pod {p['metadata']['name']}": json.dumps(p["metadata"]) for p in pods}
    ours |= {f"configmap {c['metadata']['name']}": json.dumps(c) for c in configmaps}
    theirs = {f"kubelet's event {e['metadata']['name']}": json.dumps(e) for e in about if (e.get("source") or {}).get("component") != "cairn"}
    theirs |= {f"status of pod {p['metadata']['name']}": json.dumps(p["status"]) for p in pods}
    return ours, theirs
