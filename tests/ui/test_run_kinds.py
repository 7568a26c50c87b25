"""Run kinds in the dashboard, in Chromium: the runs table marks a notebook or a JupyterLab run, and a
JupyterLab that is starting or running has an "Open JupyterLab" button on its page.

The button asks the server for a one-time address of the lab (``POST /api/v1/runs/{ref}/lab``); the
tests answer that request themselves (``page.route``), as the server would, so the dashboard is tested
against the contract alone. The address they hand out is a page on a loopback listener: the new tab
must land there. The runs are made in the server's store directly, as `runyard notebook` and
`runyard run NB.ipynb` would leave them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tests.browser import needs_chromium
from tests.ui.test_dashboard import STATIC, numbers_in_table, shot
from tests.unit.server.conftest import LiveServer

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.timeout(300),
    needs_chromium,
]

LAB_ROUTE = "**/api/v1/runs/*/lab"


@dataclass
class Runs:
    """The numbers and ids of the runs made for these tests."""

    server: LiveServer
    script: int
    notebook: int
    lab: int
    lab_id: str
    starting_lab: int
    ended_lab: int


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    from runyard.store.api import NewRun, RunPatch
    from runyard.store.engine import create_engine
    from runyard.store.sql import SqlStore
    from runyard.types import RunKind, RunStatus

    if not STATIC.exists():
        pytest.fail("the dashboard is not built: run `make ui`")
    root = tmp_path_factory.mktemp("kinds")
    live = LiveServer(root / "server-home", f"sqlite:///{root / 'runyard.db'}")
    live.start()
    store = SqlStore(create_engine(live.db_url))
    try:
        def make(name: str, kind: RunKind, status: RunStatus = RunStatus.RUNNING) -> Any:
            return store.create_run(NewRun(project="kinds", name=name, kind=kind, status=status,
                                           command=["python", "-m", "runyard.notebook.labrun"]
                                           if kind is RunKind.JUPYTERLAB else ["python", "train.py"]))

        script = make("train", RunKind.SCRIPT)
        notebook = make("report", RunKind.NOTEBOOK)
        store.update_run(notebook.number, RunPatch(status=RunStatus.FINISHED))
        lab = make("lab", RunKind.JUPYTERLAB)
        starting = make("lab-starting", RunKind.JUPYTERLAB, RunStatus.STARTING)
        ended = make("lab-ended", RunKind.JUPYTERLAB)
        store.update_run(ended.number, RunPatch(status=RunStatus.STOPPED))
        yield Runs(live, script.number, notebook.number, lab.number, lab.id, starting.number, ended.number)
    finally:
        store.close()
        live.kill()


class Page:
    """A page of a fresh browser context, and what its console said was an error."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=url)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))


@pytest.fixture
def tab(browser: Any, runs: Runs) -> Iterator[Page]:
    opened = Page(browser, runs.server.url)
    yield opened
    opened.context.close()


class Landing:
    """A page on loopback standing in for the lab: records the paths it is asked for."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        heard = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                heard.append(self.path)
                body = b"<!doctype html><title>JupyterLab</title><p>the lab</p>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def landing() -> Iterator[Landing]:
    served = Landing()
    yield served
    served.close()


def open_run(page: Any, number: int) -> None:
    page.goto(f"/runs/{number}")
    page.locator("[data-testid=run-status]").wait_for()


def test_the_runs_table_marks_notebook_and_jupyterlab_runs_and_not_scripts(tab: Page, runs: Runs) -> None:
    page = tab.page
    page.goto("/projects/kinds")
    page.locator(f"[data-testid=run-row][data-number='{runs.lab}']").wait_for()

    def badge(number: int) -> Any:
        return page.locator(f"[data-testid=run-row][data-number='{number}'] [data-testid=run-kind]")

    assert badge(runs.lab).inner_text() == "jupyterlab"
    assert badge(runs.notebook).inner_text() == "notebook"
    assert badge(runs.script).count() == 0
    shot(page, "run-kinds")
    page.locator("[data-testid=filter]").fill("kind:jupyterlab")  # as `runyard ls --kind jupyterlab`
    page.locator("[data-testid=filter]").press("Enter")
    page.locator("[data-testid=row-count]").filter(has_text="3 of 5").wait_for()
    assert sorted(numbers_in_table(page)) == sorted([runs.lab, runs.starting_lab, runs.ended_lab])
    open_run(page, runs.lab)  # the run's own page says it too
    assert page.locator("[data-testid=run-kind]").inner_text() == "jupyterlab"
    assert tab.errors == []


def test_open_jupyterlab_asks_for_a_one_time_address_and_the_new_tab_lands_on_it(
        tab: Page, runs: Runs, landing: Landing) -> None:
    page = tab.page
    address = f"{landing.url}/lab/{runs.lab_id}/?ticket=one-time-7f3a"
    asked: list[tuple[str, str]] = []

    def answer(route: Any) -> None:
        asked.append((route.request.method, route.request.url))
        route.fulfill(status=200, content_type="application/json",
                      body=json.dumps({"url": address, "expires_in": 120}))

    page.route(LAB_ROUTE, answer)
    open_run(page, runs.lab)
    with tab.context.expect_page() as opened:
        page.locator("[data-testid=open-lab]").click()
    lab = opened.value
    lab.wait_for_url(address)
    assert asked == [("POST", f"{runs.server.url}/api/v1/runs/{runs.lab}/lab")]
    assert [p for p in landing.paths if p != "/favicon.ico"] == [f"/lab/{runs.lab_id}/?ticket=one-time-7f3a"]
    assert lab.evaluate("window.opener") is None  # the lab gets no handle on the dashboard
    assert page.locator("[data-testid=lab-error]").count() == 0
    assert tab.errors == []


def test_an_address_that_is_not_a_web_page_is_refused(tab: Page, runs: Runs) -> None:
    """The tab is this page's origin until it navigates: a javascript: address would run as the dashboard."""
    page = tab.page
    page.route(LAB_ROUTE, lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"url": "javascript:document.title='pwned'", "expires_in": 120})))
    open_run(page, runs.lab)
    with tab.context.expect_page() as opened:
        page.locator("[data-testid=open-lab]").click()
    blank = opened.value
    page.locator("[data-testid=lab-error]").filter(has_text="not a web address").wait_for()
    if not blank.is_closed():
        blank.wait_for_event("close")
    assert tab.context.pages == [page] and page.title() != "pwned"
    assert tab.errors == []


@pytest.mark.parametrize(("status", "message"), [
    (404, "JupyterLab is not answering yet"),
    (409, "run 3 has ended"),
    (503, "this server's lab listener is off (runyard server --lab-port)"),
])
def test_a_refusal_is_shown_next_to_the_button_and_no_tab_stays_open(
        tab: Page, runs: Runs, status: int, message: str) -> None:
    page = tab.page
    page.route(LAB_ROUTE, lambda route: route.fulfill(status=status, content_type="application/json",
                                                      body=json.dumps({"error": message})))
    open_run(page, runs.lab)
    with tab.context.expect_page() as opened:
        page.locator("[data-testid=open-lab]").click()
    blank = opened.value
    error = page.locator("[data-testid=lab-error]")
    error.wait_for()
    assert error.inner_text() == message
    if not blank.is_closed():
        blank.wait_for_event("close")
    assert blank.is_closed() and tab.context.pages == [page]
    assert page.locator("[data-testid=open-lab]").is_enabled()  # one may try again
    if status == 404:
        shot(page, "open-jupyterlab-refused")
    # The browser reports the refused request itself; nothing else may reach the console.
    assert [e for e in tab.errors if "Failed to load resource" not in e] == []


def test_the_button_is_there_only_for_a_jupyterlab_that_is_starting_or_running(tab: Page, runs: Runs) -> None:
    page = tab.page
    for number, shown in [(runs.lab, True), (runs.starting_lab, True), (runs.ended_lab, False),
                          (runs.script, False), (runs.notebook, False)]:
        open_run(page, number)
        assert page.locator("[data-testid=open-lab]").count() == (1 if shown else 0), number
    assert tab.errors == []
