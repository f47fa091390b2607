"""What the Prefect UI sends when a test clicks, and what the server answers.

Why a click on the Run form's Submit can look as if it "went nowhere" (Prefect 3.9's
``FlowRunCreateForm``): its submit handler returns without a word while the form is ``disabled``
(a create in flight) and when the validation it runs first (``POST /ui/schemas/validate`` and
the run name) fails to answer; then the page POSTs ``create_flow_run``. And a form filled while
the page was still loading its deployment can be rendered anew without the values. So a test
loads the page until its requests are done, checks the form holds what it filled, clicks once and
waits for those two requests, in order.

Why the server answers 503: SQLite. Prefect's write endpoints (``create_flow_run``, ``resume``,
``set_state``) run in a deferred transaction that reads first and writes last; when another
connection wrote in between (the worker's poll every 0.5 s, a running flow's log batches, the
event persister), SQLite refuses the write at once with SQLITE_BUSY_SNAPSHOT ("database is
locked"): the busy timeout (60 s) does not apply to that conflict. The server rolls back and
answers 503, and Prefect's Python clients retry it; the UI does not. A server started with
``PREFECT_API_LOG_RETRYABLE_ERRORS=true`` names each one in server.log ("database is locked" in
``resume_flow_run`` -> ``INSERT INTO flow_run_state``). That is the one retry kept here: once, for
a 503, which created nothing.
"""

from __future__ import annotations

from typing import Any

CREATE, VALIDATE = "/create_flow_run", "/ui/schemas/validate"
SQLITE_503 = ("SQLite refused a write that raced another writer (SQLITE_BUSY_SNAPSHOT; see server.log): "
              "the server rolled back and created nothing, so the request is sent once more")


def _is_post(path_end: str) -> Any:
    return lambda r: r.request.method == "POST" and r.url.endswith(path_end)


def submit_run_form(page: Any) -> Any:
    """Click Submit once; the server's answer to the create it leads to (a second click only after a 503)."""
    button = page.get_by_role("button", name="Submit")
    for attempt in (1, 2):
        creates: list[Any] = []  # the create may be answered before the validation's answer reaches us
        listen = lambda r, creates=creates: creates.append(r) if _is_post(CREATE)(r) else None  # noqa: E731
        page.on("response", listen)
        try:
            with page.expect_response(_is_post(VALIDATE)) as validated:
                button.click()
            verdict = validated.value
            if not verdict.ok:
                raise AssertionError(f"the form's validation answered {verdict.status}: {verdict.text()}")
            # A validation that refuses still leads to a create in 3.9 (its result is a truthy list of
            # errors), which the server's parameter schema refuses: that refusal is the answer.
            answer = creates[0] if creates else page.wait_for_event("response", predicate=_is_post(CREATE))
        finally:
            page.remove_listener("response", listen)
        if answer.status != 503 or attempt == 2:
            return answer
        print(SQLITE_503)  # shown with a failed test's output
    raise AssertionError("unreachable")


def served(page: Any, path_end: str, act: Any) -> Any:
    """Do ``act``, which makes the UI POST to a URL ending in ``path_end``; the server's answer,
    after at most one more ``act`` when the first answer was SQLite's 503 (see the module)."""
    for attempt in (1, 2):
        with page.expect_response(_is_post(path_end)) as answer:
            act()
        if answer.value.status != 503 or attempt == 2:
            return answer.value
        print(f"{path_end}: {SQLITE_503}")  # shown with a failed test's output
    raise AssertionError("unreachable")


NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


def load(page: Any, url: str, ready: Any, each_s: float = 45) -> None:
    """Open ``url`` and wait until the locator ``ready`` shows and the page's requests are done
    (a form filled while its deployment is still loading can be rendered again, empty).

    One reload, for one named cause outside cairn and Prefect: Chromium aborts every request in
    flight with net::ERR_NETWORK_CHANGED when a network interface comes or goes, which the local
    runtime's instances (a veth pair each) and the Kubernetes test clusters do all the time; a
    page whose start-up requests were aborted can stay blank. Any other page that does not show
    what it should fails the test."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    aborted: list[str] = []
    listen = lambda r: aborted.append(r.url) if NETWORK_CHANGED in (r.failure or "") else None  # noqa: E731
    page.on("requestfailed", listen)
    try:
        page.goto(url)
        try:
            ready.wait_for(timeout=each_s * 1000)
        except PlaywrightTimeout:
            if not aborted:
                raise
            print(f"{url}: Chromium aborted {len(aborted)} requests ({NETWORK_CHANGED}): loading it once more")
            page.goto(url)
            ready.wait_for()
        page.wait_for_load_state("networkidle")
    finally:
        page.remove_listener("requestfailed", listen)
