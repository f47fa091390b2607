"""Reading orders for people (`cairn release list/show`) against a real platform: a page of
orders costs the same few queries however long it is, statuses and pause modes come out right, a
prefix finds an order older than the newest page, and the CLI's reads never import Prefect. The orders
are made by the real `release` flow, as users make them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest

from cairn.plan import PauseMode
from cairn.status import Status
from tests.test_webhook import register_app

pytestmark = [pytest.mark.prefect, pytest.mark.slow]


def _ship(app: str, version: str, mode: PauseMode = PauseMode.NONE, batches: int = 1) -> str:
    """One real release order (the `release` flow through the worker, on the local runtime), to its end."""
    from cairn.orders import actions

    order = actions.create_order(app, "production", version, batches, mode)["id"]
    done = actions.wait_for(order, {Status.COMPLETED, Status.FAILED, Status.PAUSED}, timeout_s=300)
    assert done["status"] in ("completed", "paused"), done["message"]
    return order


@pytest.fixture(scope="module")
def orders(platform: str) -> dict[str, Any]:
    """Real orders, as users make them: a small app with 2 finished orders; a larger history of 5
    where the second was switched to every_batch while paused, approved, then rolled back. Short
    releases (2 instances, one batch, no pause) on the local runtime; the two apps ship side by side."""
    from cairn.orders import actions

    small, large = register_app("hs"), register_app("hl")
    made: dict[str, Any] = {"small": small, "large": large}

    def ship_small() -> None:
        made["small_ids"] = [_ship(small, f"v{k}") for k in (1, 2)]

    beside = threading.Thread(target=ship_small)
    beside.start()
    try:
        first = _ship(large, "v1")
        switched = _ship(large, "v2", PauseMode.FIRST_BATCH, batches=2)
        actions.switch_pause_mode(switched, PauseMode.EVERY_BATCH)
        actions.resume(switched, comment="approved")  # the mode stays every_batch; the last batch never pauses
        assert actions.wait_for(switched, {Status.COMPLETED, Status.FAILED}, timeout_s=300)["status"] == "completed"
        assert actions.rollback(order=switched)["state"] == "Completed"
        made["large_ids"] = [first, switched, *(_ship(large, f"v{k}") for k in (3, 4, 5))]
    finally:
        beside.join()
    assert len(made.get("small_ids", [])) == 2, "the small app's orders did not all ship"
    return made


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from cairn.blocks import api

    calls: list[str] = []
    original = api.Api.request

    def request(self: api.Api, method: str, path: str, body: dict[str, Any] | None, what: str) -> Any:
        calls.append(f"{method} {path}")
        return original(self, method, path, body, what)

    monkeypatch.setattr(api.Api, "request", request)
    return calls


def test_a_page_of_orders_costs_the_same_queries_whatever_its_length(orders: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from cairn.orders import actions

    calls = _counting(monkeypatch)
    ids = orders["large_ids"]
    assert len(actions.list_orders(orders["small"])) == 2
    per_small = len(calls)
    calls.clear()
    rows = {r["id"]: r for r in actions.list_orders(orders["large"])}
    assert len(rows) == 5 and len(calls) == per_small == 3, calls  # runs, their rollbacks, their Variables
    switched = rows[ids[1]]
    assert switched["status"] == "rolled_back" and switched["pause_mode"] == "every_batch"
    assert switched["pause_mode_history"][0]["by"] == actions.who() and switched["pause_mode_history"][0]["why"] == "switched"
    others = [rows[i] for i in ids if i != ids[1]]
    assert {r["status"] for r in others} == {"completed"} and {r["pause_mode"] for r in others} == {"none"}


def test_a_prefix_finds_an_order_older_than_the_newest_page(orders: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from cairn.orders import history

    monkeypatch.setattr(history, "PAGE", 2)  # the same paging as 200 a page, on a short history
    oldest = orders["large_ids"][0]  # four newer orders of its own app alone: pages behind the newest
    assert str(history.read(oldest[:8]).id) == oldest
    with pytest.raises(Exception, match="no release order"):
        history.read("ffffffff-nope")


def test_release_show_and_list_do_not_import_prefect(orders: dict[str, Any]) -> None:
    """Importing Prefect costs more CPU than the whole answer may take (issue 11: < 500 ms)."""
    app, order = orders["small"], orders["small_ids"][0]
    probe = ("import sys, runpy; sys.argv = ['cairn', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('cairn.cli.main', run_name='__main__')\n"
             "except SystemExit: pass\n"
             "print(json.dumps(sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))), file=sys.stderr)")
    for args in (["release", "show", order, "--json"], ["release", "list", "--app", app, "--json"]):
        proc = subprocess.run([sys.executable, "-c", "import json\n" + probe, *args], capture_output=True, text=True, timeout=120)
        assert json.loads(proc.stderr.strip().splitlines()[-1]) == [], proc.stderr
        assert order in proc.stdout
