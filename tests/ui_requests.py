"""What the Prefect UI sends when a test clicks, and what the server answers: so a test can tell a
click that went nowhere, or a request the busy server refused with a 503, from a real refusal.

On a loaded machine a person would simply click again in both cases; these helpers do the same,
and never when the first click may still create something.
"""

from __future__ import annotations

import time
from typing import Any


CREATE, VALIDATE = "/create_flow_run", "/ui/schemas/validate"


class FormRequests:
    """The Run form's requests as the browser sends them: validations in flight, creates sent."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.in_flight: set[Any] = set()  # Playwright Requests, one object per request
        self.creates: list[Any] = []
        self._handlers = {"request": self._sent, "requestfinished": self._done, "requestfailed": self._done}
        for event, handler in self._handlers.items():
            page.on(event, handler)

    def _sent(self, request: Any) -> None:
        if request.method == "POST" and request.url.endswith(CREATE):
            self.creates.append(request)
        elif request.method == "POST" and request.url.endswith(VALIDATE):
            self.in_flight.add(request)

    def _done(self, request: Any) -> None:
        self.in_flight.discard(request)

    def close(self) -> None:
        for event, handler in self._handlers.items():
            self.page.remove_listener(event, handler)


def submit_run_form(page: Any, quiet_s: float = 5, clicks: int = 5) -> Any:
    """Click Submit until the server answers a create request with other than 503; that answer.

    On a loaded machine two things go wrong that a person would simply answer by clicking Submit
    again: SQLite is busy and the server answers 503 (it created nothing; the UI shows a toast,
    the form keeps its values), or the click goes nowhere, no request and no message (the UI's
    handler can run with the form state of an earlier render). A click without a create is only
    repeated once no validation has been in flight for ``quiet_s``, so a slow server never gets
    two creates (a second create would be a second release)."""
    requests = FormRequests(page)
    try:
        for _ in range(clicks):
            requests.creates.clear()
            page.get_by_role("button", name="Submit").click()
            quiet_since = time.monotonic()
            while not requests.creates and time.monotonic() - quiet_since < quiet_s:
                if requests.in_flight:
                    quiet_since = time.monotonic()
                page.wait_for_timeout(200)  # lets Playwright deliver the request events
            if not requests.creates:
                print("Submit sent no create request: clicking again")  # shown with a failed test's output
                continue
            answer = requests.creates[0].response()
            if answer is None:  # aborted in the browser (net::ERR_NETWORK_CHANGED): the server may have it
                raise AssertionError(f"the browser lost the create request ({requests.creates[0].failure}): "
                                     "whether it created a run is unknown, so it is not sent again")
            if answer.status != 503:
                return answer
            print("the server was busy (503): submitting again")
        raise AssertionError(f"the Run form created no run after {clicks} clicks on Submit")
    finally:
        requests.close()


def served(page: Any, path_end: str, act: Any, tries: int = 4) -> Any:
    """Do ``act``, which makes the UI POST to a URL ending in ``path_end``, until the server answers
    other than 503; that answer. A 503 is SQLite busy on a loaded machine: the server did nothing,
    the UI shows a toast and keeps its form, and a person would click again."""
    for _ in range(tries):
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(path_end)) as answer:
            act()
        if answer.value.status != 503:
            return answer.value
        print(f"the server was busy (503) on {path_end}: again")  # shown with a failed test's output
    raise AssertionError(f"the server answered 503 to {tries} requests to ...{path_end}")


def load(page: Any, url: str, ready: Any, tries: int = 3, each_s: float = 45) -> None:
    """Open ``url`` until the locator ``ready`` shows (reloading is safe: a GET changes nothing).

    Chromium aborts what is in flight with net::ERR_NETWORK_CHANGED whenever an interface comes
    or goes, which other work on the machine does (the Kubernetes test clusters, the local
    runtime): a page whose scripts were aborted stays blank."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(1, tries + 1):
        page.goto(url)
        try:
            ready.wait_for(timeout=each_s * 1000 if attempt < tries else None)
            return
        except PlaywrightTimeout:
            if attempt == tries:
                raise
            print(f"{url} did not show what it should within {each_s:.0f}s: loading it again")
