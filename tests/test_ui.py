"""The Prefect UI, driven in headless Chromium (Debian's ``chromium`` through Playwright): start a
release from the deployment's Run form, approve it from the pause form, retry a failed run from
the dashboard. The API and UI are behind basic auth, on loopback too: the UI asks for the string
at login (tested once), every other page starts logged in.

Screenshots of failed tests are kept under ``.build/test-output/ui``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.plan import PauseMode
from cairn.status import Status
from tests.test_webhook import read, register_app, runs_of, wait_status, wait_until
from tests.ui_requests import load, served, submit_run_form

pytestmark = [pytest.mark.prefect, pytest.mark.slow, pytest.mark.ui]
ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / ".build" / "test-output" / "ui"
CHROMIUM = os.environ.get("CAIRN_CHROMIUM", "/usr/bin/chromium")
# No sandbox: CI runs as root. The rest keeps Chromium off the network and quiet.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _ui_serves(base: str) -> bool:
    try:
        answer = httpx.get(f"{base}/v2/", timeout=10)  # the API answers /ui-settings even without the UI
        return answer.status_code == 200 and "text/html" in answer.headers.get("content-type", "")
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def ui(platform: str) -> str:
    """The session server with its UI. The session starts it without (faster); restart it with the UI
    on the same port and database: runs, the worker and everything stored carry over."""
    from cairn.controlplane.processes import ensure_server, stop_server

    base = platform.removesuffix("/api")
    if not _ui_serves(base):
        stop_server()
        os.environ["PREFECT_UI_ENABLED"] = "true"
        # server.log then names each 503 (SQLite's write conflicts, tests/ui_requests.py).
        os.environ["PREFECT_API_LOG_RETRYABLE_ERRORS"] = "true"
        ensure_server(port=int(platform.rsplit(":", 1)[1].split("/")[0]))
    settings = httpx.get(f"{base}/ui-settings", timeout=10).json()
    assert settings["api_url"] == platform and settings["auth"] == "BASIC", settings
    return base


class Browser:
    """Chromium on a thread of its own. Playwright's sync API keeps an event loop running on its
    thread, and Prefect's sync calls (block loads, ...) would see it and return coroutines: so the
    test's own thread never touches Playwright, and every browser step runs here via ``do``."""

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self.page: Any = None

    def call(self, fn: Any, *args: Any) -> Any:
        return self.pool.submit(fn, *args).result()

    def do(self, step: Any, *args: Any) -> Any:
        return self.call(step, self.page, *args)

    def start(self) -> None:
        from playwright.sync_api import sync_playwright

        self.playwright = sync_playwright().start()
        self.chromium = self.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)

    def new_page(self, logged_in: bool = True) -> None:
        self.context = self.chromium.new_context(viewport={"width": 1400, "height": 1000})
        if logged_in:  # where the UI's login form keeps the string it was given
            self.context.add_init_script(f"localStorage.setItem('prefect-password', {json.dumps(_basic(_auth_string()))})")
        self.page = self.context.new_page()
        self.page.set_default_timeout(90_000)  # two cores shared with other test runs: the UI can be slow
        self.console: list[str] = []  # the UI's own errors, printed with a failed test's screenshot
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)

    def stop(self) -> None:
        self.chromium.close()
        self.playwright.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (or set CAIRN_CHROMIUM)")
    b = Browser()
    b.call(b.start)
    yield b
    b.call(b.stop)
    b.pool.shutdown()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Browser]:
    """A fresh page; its screenshot is kept when the test fails (pytest counts the failure before teardown)."""
    failed_before = request.session.testsfailed
    browser.call(browser.new_page)
    yield browser
    if request.session.testsfailed > failed_before:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / f"{request.node.name}-{time.strftime('%H%M%S')}.png"
        url = browser.do(lambda p: (p.screenshot(path=str(shot), full_page=True), p.url)[1])
        print(f"screenshot of the failed test: {shot} ({url})")
        print("browser console:", *browser.console[-30:], sep="\n  ")
    browser.call(browser.context.close)


def _auth_string() -> str:
    return os.environ["PREFECT_API_AUTH_STRING"]  # the session's, as tests/conftest.py set it


def _basic(value: str) -> str:
    import base64

    return base64.b64encode(value.encode()).decode()


def test_the_ui_asks_for_the_auth_string_and_works_once_given(ui: str, browser: Browser) -> None:
    """On loopback too: a page without the string gets the login form; a wrong string is refused
    there (the UI forgets it, the form stays), the right one opens the dashboard, whose requests
    to the API it then answers."""
    browser.call(browser.new_page, False)

    def login(page: Any, value: str) -> None:
        page.goto(f"{ui}/v2/dashboard")
        page.get_by_placeholder("admin:pass").fill(value)
        page.get_by_role("button", name="Login").click()

    def refused(page: Any) -> None:
        login(page, "cairn:not-the-right-password")
        # The click stored the string before asking the API; the 401 makes the UI forget it.
        page.wait_for_function("localStorage.getItem('prefect-password') === null")
        page.get_by_placeholder("admin:pass").wait_for()

    def accepted(page: Any) -> Any:
        with page.expect_response(lambda r: "/api/" in r.url and r.request.method == "POST" and r.ok) as answered:
            login(page, _auth_string())
        page.wait_for_url("**/v2/dashboard**")
        return answered.value.url, page.evaluate("localStorage.getItem('prefect-password')")

    try:
        browser.do(refused)
        url, stored = browser.do(accepted)
        assert stored == _basic(_auth_string()) and url.startswith(ui), (url, stored)
    except Exception:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shot = OUTPUT / f"login-{time.strftime('%H%M%S')}.png"
        browser.do(lambda p: p.screenshot(path=str(shot), full_page=True))
        print(f"screenshot of the failed test: {shot}", "browser console:", *browser.console[-30:], sep="\n  ")
        raise
    finally:
        browser.call(browser.context.close)


def fill_run_form(page: Any, base: str, deployment: str, app: str, version: str, batches: int) -> None:
    load(page, f"{base}/v2/deployments/deployment/{deployment}/run", page.get_by_label("App"))
    page.get_by_label("App").fill(app)
    page.get_by_role("button", name="Select Environment").click()
    page.get_by_role("option", name="production").click()
    page.get_by_label("Version").fill(version)
    page.get_by_label("Batches (Optional)").fill(str(batches))
    # Submit validates what the form holds: make sure it holds what was filled.
    from playwright.sync_api import expect

    expect(page.get_by_label("App")).to_have_value(app)
    expect(page.get_by_label("Version")).to_have_value(version)
    expect(page.get_by_label("Batches (Optional)")).to_have_value(str(batches))


def refused_run_form(page: Any, reason: str) -> None:
    """Submit a form the server's parameter schema refuses: no run, and the UI shows the reason."""
    answer = submit_run_form(page)
    assert not answer.ok and reason in answer.text(), f"expected a refusal: {answer.status} {answer.text()}"
    see(page, reason)


def started_from_form(page: Any) -> str:
    """Submit the filled form; the id of the run it created."""
    answer = submit_run_form(page)
    assert answer.ok, f"the server refused the form: {answer.status} {answer.text()}"
    return str(answer.json()["id"])


def run_menu(page: Any, base: str, run_id: Any, state: str, item: str) -> None:
    """Open a flow run's page once it shows ``state`` and pick ``item`` from its menu."""
    load(page, f"{base}/v2/runs/flow-run/{run_id}", page.get_by_text(state, exact=True).first)
    page.get_by_role("button", name="Open menu").first.click()
    page.get_by_role("menuitem", name=item).click()


def approve(page: Any, comment: str) -> None:
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Approve batch 2 and after.").wait_for()
    dialog.get_by_role("button", name="Select Pause Mode").click()
    page.get_by_role("option", name="none").click()
    page.get_by_role("listbox").wait_for(state="hidden")  # a click while it closes goes nowhere
    dialog.get_by_label("Comment (Optional)").fill(comment)
    served(page, "/resume", dialog.get_by_role("button", name="Resume").click)
    dialog.wait_for(state="hidden")  # the dialog closes once the server accepted the input


def see(page: Any, text: str, reload: bool = False) -> None:
    """``text`` on the page; ``reload`` opens the page anew, for what it shows only when loaded."""
    if reload:
        load(page, page.url, page.get_by_text(text).first)
    page.get_by_text(text).first.wait_for()


def retry_from_dashboard(page: Any, base: str, run_id: Any) -> None:
    def retry() -> None:
        run_menu(page, base, run_id, "Failed", "Retry")
        page.get_by_role("alertdialog").get_by_role("button", name="Retry").click()

    served(page, "/set_state", retry)


def test_release_from_the_run_form_approved_from_the_pause_form(ui: str, page: Browser) -> None:
    from cairn.flows.approval import given
    from cairn.orders.records import deployment_id

    app = register_app("ui")
    deployment = str(deployment_id("release"))

    # The form refuses what its schema can tell (the server enforces the parameter schema) ...
    page.do(fill_run_form, ui, deployment, app, "bad version!", 2)
    page.do(refused_run_form, "does not match")
    assert runs_of(app) == [], "a refused form starts nothing"
    # ... and the flow refuses what only it can tell: more batches than the environment's 2 instances.
    page.do(fill_run_form, ui, deployment, app, "v1", 5)
    bad = page.do(started_from_form)
    wait_until("the run to fail", lambda: read(bad).state.is_failed(), timeout_s=180)
    assert "at most the instance count (2)" in read(bad).state.message

    page.do(fill_run_form, ui, deployment, app, "v1", 2)
    order = page.do(started_from_form)
    assert sorted(str(r.id) for r in runs_of(app)) == sorted([order, bad]), "one run per submitted form"
    paused = wait_status(order, Status.PAUSED, Status.FAILED, Status.COMPLETED)
    assert paused["status"] == "paused", paused["message"]

    page.do(run_menu, ui, order, "Paused", "Resume")
    page.do(approve, "approved in the browser")

    done = wait_status(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    approval = given(uuid.UUID(order), 1)
    assert approval is not None and (approval.comment, approval.pause_mode) == ("approved in the browser", "none")
    page.do(see, "Completed", True)


def register_per_instance_health(tmp_path: Path) -> tuple[str, Path]:
    """3 instances whose health check needs a file named after the instance: one instance can fail alone."""
    from cairn.blocks import store
    from cairn.configfile import load_data

    app = f"uiretry-{uuid.uuid4().hex[:8]}"
    deps = tmp_path / "deps"
    deps.mkdir()
    env = {"cluster": "ui-a", "image": "cairn/demo-app:latest", "instances": 3, "cpu": 0.2, "memory_mb": 96,
           "ports": [{"container_port": 8080}], "dirs": [{"path": "/deps", "host_path": str(deps)}],
           "health_check": {"exec": {"command": ["sh", "-c", "test -e /deps/ok-$(cat /etc/hostname)"]},
                            "period_s": 0.5, "timeout_s": 2, "failure_threshold": 6}}
    store.apply(load_data({"clusters": [{"name": "ui-a", "allowed_host_paths": [str(deps)]}, {"name": "ui-b"}],
                           "apps": [{"name": app, "deploy_type": "image", "environments": {"production": env}}]}))
    return app, deps


def started(app: str) -> dict[int, float | None]:
    from cairn.tasks.context import env_target

    t = env_target(app, "production")
    return {i.slot: i.started_at for i in t.runtime.observe(t.env)}


def test_dashboard_retry_reruns_only_what_is_not_done(ui: str, page: Browser, tmp_path: Path) -> None:
    from cairn.flows.approval import given
    from cairn.orders import actions

    app, deps = register_per_instance_health(tmp_path)
    for slot in (0, 2):  # the instance of batch 2 (slot 1) will not become healthy
        (deps / f"ok-{app}-production-{slot}").touch()
    order = actions.create_order(app, "production", "v1", 3, PauseMode.EVERY_BATCH)["id"]
    assert wait_status(order, Status.PAUSED, Status.FAILED)["status"] == "paused"
    first = started(app)[0]
    actions.resume(order, comment="batch 1 looks fine")
    failed = wait_status(order, Status.FAILED, Status.COMPLETED)
    assert failed["status"] == "failed" and "batch 2 failed" in failed["message"], failed["message"]

    (deps / f"ok-{app}-production-1").touch()  # the cause is fixed; retry from the dashboard
    page.do(retry_from_dashboard, ui, order)

    wait_until("the retry to start", lambda: read(order).run_count >= 2, timeout_s=120)
    again = wait_status(order, Status.PAUSED, Status.FAILED, Status.COMPLETED)
    assert again["status"] == "paused", f"the pause after batch 2 still asks: {again}"
    run = read(order)
    assert run.state.state_details.pause_key in ("approve-after-batch-2", "approve-after-batch-2-cold"), run.state
    assert given(run.id, 1).comment == "batch 1 looks fine", "the approval given stays given"  # type: ignore[union-attr]
    assert given(run.id, 2) is None
    assert started(app)[0] == first, "the completed batch was not redone"

    actions.resume(order, comment="batch 2 fine after the retry")
    done = wait_status(order, Status.COMPLETED, Status.FAILED)
    assert done["status"] == "completed", done["message"]
    assert started(app)[0] == first


def test_beyond_loopback_the_api_and_ui_require_basic_auth(tmp_path: Path, prefect_server: str) -> None:
    """`cairn up --host 0.0.0.0` without an auth string: one is generated and kept 0600; the API
    refuses requests without it, and cairn's own clients (the CLI here) send it."""
    from cairn.controlplane.processes import free_port

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API_", "PREFECT_SERVER_API_AUTH", "PREFECT_UI_API"))}
    env["CAIRN_HOME"] = str(home)
    port = free_port(4390)
    start = ("from cairn.controlplane import processes as p; import sys; "
             f"print(p.ensure_server(port={port}, host='0.0.0.0').url)")
    stop = "from cairn.controlplane import processes as p; p.stop_server()"
    try:
        out = subprocess.run([sys.executable, "-c", start], env=env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        api = out.stdout.strip().splitlines()[-1]
        auth_file = home / "api-auth"
        assert oct(auth_file.stat().st_mode & 0o777) == "0o600"
        user, password = auth_file.read_text().strip().split(":", 1)

        assert httpx.get(f"{api}/health", timeout=10).status_code == 200, "probes stay open"
        assert httpx.post(f"{api}/flows/filter", json={}, timeout=10).status_code == 401
        assert httpx.post(f"{api}/flows/filter", json={}, auth=(user, "wrong-password-123"), timeout=10).status_code == 401
        assert httpx.post(f"{api}/flows/filter", json={}, auth=(user, password), timeout=10).status_code == 200
        settings = httpx.get(f"{api.removesuffix('/api')}/ui-settings", timeout=10).json()
        assert settings["auth"] == "BASIC" and settings["api_url"] == "/api", settings  # the UI asks for a login

        cli_env = {**env, "PREFECT_API_URL": api}
        ok = subprocess.run([sys.executable, "-m", "cairn.cli.main", "release", "list", "--json"], env=cli_env,
                            capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and json.loads(ok.stdout) == [], ok.stderr
        wrong = subprocess.run([sys.executable, "-m", "cairn.cli.main", "release", "list", "--json"],
                               env={**cli_env, "PREFECT_API_AUTH_STRING": f"{user}:wrong-password-123"},
                               capture_output=True, text=True, timeout=120)
        assert wrong.returncode != 0
    finally:
        subprocess.run([sys.executable, "-c", stop], env=env, timeout=60)
        shutil.rmtree(home, ignore_errors=True)
