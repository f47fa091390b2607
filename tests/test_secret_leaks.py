"""A secret value never reaches anything a release order leaves behind.

Three real orders (the release flow, the worker, the local agent) of an app whose secret_env holds
a fresh random value: one whose app prints the secret on start, one whose failing health check
quotes it, one whose failing PostStart hook prints it. Then every place the platform writes is
searched for the raw value: the Prefect database file and its WAL (Prefect encrypts block
documents at rest, so not even the Secret block shows), each table and column of that database,
flow-run and task-run states with their messages, artifacts, logs and events as the API serves
them, the local agent's state directory (instance console logs included: the agent redacts them)
and every other file of the platform under $CAIRN_HOME (process logs, state files).
"""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.plan import PauseMode
from cairn.status import Status

pytestmark = [pytest.mark.prefect, pytest.mark.slow]
BLOCK = "leak-db-password"


def register(value: str) -> list[tuple[str, str]]:
    """Three environments (of two apps), each leaking the secret its own way if cairn lets it:
    (app, environment) of the printing app, the quoting check and the printing hook."""
    from cairn.blocks import store
    from cairn.configfile import load_data

    store.set_secret(BLOCK, value)
    app, other = f"leak-{uuid.uuid4().hex[:8]}", f"leakhook-{uuid.uuid4().hex[:8]}"
    base: dict[str, Any] = {
        "cluster": "leak-a", "image": "cairn/demo-app:latest", "instances": 2, "cpu": 0.2, "memory_mb": 96,
        "ports": [{"container_port": 8080}], "secret_env": {"DB_PASSWORD": BLOCK},
        "health_check": {"http": {"path": "/healthz", "port": 8080}, "period_s": 0.5, "timeout_s": 2, "failure_threshold": 40},
        "lifecycle": {"termination_grace_period_s": 2},
    }
    prints = {**base, "command": ["sh", "-c", 'echo "connecting with password $DB_PASSWORD"; exec python3 /acs/code/app.py']}
    check = {**base, "cluster": "leak-b", "health_check": {"exec": {"command": ["sh", "-c", 'echo "db refused password $DB_PASSWORD" >&2; exit 1']},
                                      "period_s": 0.5, "timeout_s": 2, "failure_threshold": 3}}
    hook = {**base, "lifecycle": {"termination_grace_period_s": 2,
                                  "post_start": {"exec": {"command": ["sh", "-c", 'echo "hook saw $DB_PASSWORD" >&2; exit 7']}}}}
    store.apply(load_data({"clusters": [{"name": "leak-a"}, {"name": "leak-b"}],
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


def test_nothing_an_order_leaves_behind_holds_the_secret(platform: str) -> None:
    import os

    from cairn.tasks.context import env_target

    value = f"s3cr3t-{uuid.uuid4().hex}"
    where = register(value)
    printed, checked, hooked = (ship(app, env) for app, env in where)
    app = where[0][0]
    assert printed["status"] == "completed", printed["message"]
    assert checked["status"] == "failed" and "db refused password ***" in checked["message"], checked["message"]
    assert hooked["status"] == "failed" and "hook saw ***" in hooked["message"], hooked["message"]

    # The app did print it, so the searches below look where a leak would be: its log shows the mask.
    t = env_target(app, "production")
    instance = t.runtime.observe(t.env)[0]
    assert any("connecting with password ***" in line for line in t.runtime.logs(t.env, instance.name)), "the app printed its secret"

    texts = api_texts([printed["id"], checked["id"], hooked["id"]])
    assert "db refused password ***" in texts["logs"] + texts[f"states of {checked['id']}"], "the searches see the failures"
    assert texts["events"] and texts["artifacts"], "the search must look at events and artifacts"
    leaks = [where for where, text in texts.items() if value in text]
    home = Path(os.environ["CAIRN_HOME"])
    db = home / "prefect" / "prefect.db"
    assert db.exists() and (home / "agent").is_dir(), f"the platform's files are not where they should be under {home}"
    leaks += [f"database {row}" for row in database_rows_holding(db, value)]
    searched = files_holding(value.encode(), home)
    leaks += [f"file {p}" for p in searched]
    assert not leaks, f"the secret value was found in: {leaks}"
