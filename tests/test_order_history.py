"""Reading orders for people (`cairn release list/show`) against a real Prefect server: a page of
orders costs the same few queries however long it is, statuses and pause modes come out right, a
prefix finds an order older than the newest page, and the CLI's reads never import Prefect."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.prefect


def _orders(count: int, app: str, *, rollback_first: bool = False, switch_first: bool = False) -> list[str]:
    """``count`` finished orders made straight as flow runs with cairn's tags (no worker needed)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate
    from prefect.states import Completed

    from cairn.orders.history import variable_name

    @flow(name="release")
    def release() -> None: ...

    ids = []
    with get_client(sync_client=True) as client:
        for k in range(count):
            run = client.create_flow_run(release, tags=["cairn", "kind:release", f"app:{app}", "env:production"],
                                         parameters={"app": app, "environment": "production", "version": f"v{k}", "pause_mode": "none"},
                                         state=Completed())
            ids.append(str(run.id))
        if rollback_first:
            client.create_flow_run(release, tags=["cairn", "kind:rollback", f"app:{app}", "env:production", f"rollback-of:{ids[0]}"],
                                   state=Completed())
        if switch_first:
            value = {"pause_mode": "every_batch", "history": [{"pause_mode": "every_batch", "by": "t", "at": 0, "why": "switched"}]}
            client.create_variable(VariableCreate(name=variable_name(ids[0]), value=value))
    return ids


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from cairn.blocks import api

    calls: list[str] = []
    original = api.Api.request

    def request(self: api.Api, method: str, path: str, body: dict[str, Any] | None, what: str) -> Any:
        calls.append(f"{method} {path}")
        return original(self, method, path, body, what)

    monkeypatch.setattr(api.Api, "request", request)
    return calls


def test_a_page_of_orders_costs_the_same_queries_whatever_its_length(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cairn.orders import actions

    calls = _counting(monkeypatch)
    small, large = f"hs-{uuid.uuid4().hex[:6]}", f"hl-{uuid.uuid4().hex[:6]}"
    _orders(2, small)
    ids = _orders(12, large, rollback_first=True, switch_first=True)

    calls.clear()
    assert len(actions.list_orders(small)) == 2
    per_small = len(calls)
    calls.clear()
    rows = {r["id"]: r for r in actions.list_orders(large)}
    assert len(rows) == 12 and len(calls) == per_small == 3, calls  # runs, their rollbacks, their Variables
    assert rows[ids[0]]["status"] == "rolled_back" and rows[ids[0]]["pause_mode"] == "every_batch"
    assert rows[ids[0]]["pause_mode_history"][0]["by"] == "t"
    assert {rows[i]["status"] for i in ids[1:]} == {"completed"} and {rows[i]["pause_mode"] for i in ids[1:]} == {"none"}


def test_a_prefix_finds_an_order_older_than_the_newest_page(prefect_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cairn.orders import history

    monkeypatch.setattr(history, "PAGE", 5)  # the same paging as 200 a page, on a short history
    app = f"hp-{uuid.uuid4().hex[:6]}"
    oldest = _orders(12, app)[0]
    assert str(history.read(oldest[:8]).id) == oldest
    with pytest.raises(Exception, match="no release order"):
        history.read("ffffffff-nope")


def test_release_show_and_list_do_not_import_prefect(prefect_server: str) -> None:
    """Importing Prefect costs more CPU than the whole answer may take (issue 11: < 500 ms)."""
    app = f"hi-{uuid.uuid4().hex[:6]}"
    order = _orders(1, app)[0]
    probe = ("import sys, runpy; sys.argv = ['cairn', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('cairn.cli.main', run_name='__main__')\n"
             "except SystemExit: pass\n"
             "print(json.dumps(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))), file=sys.stderr)")
    for args in (["release", "show", order, "--json"], ["release", "list", "--app", app, "--json"]):
        proc = subprocess.run([sys.executable, "-c", "import json\n" + probe, *args], capture_output=True, text=True, timeout=120)
        assert json.loads(proc.stderr.strip().splitlines()[-1]) == [], proc.stderr
        assert order in proc.stdout
