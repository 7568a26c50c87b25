"""Run kinds in the dashboard, in Chromium: the runs table marks a notebook or a JupyterLab run.

The runs are made in the server's store directly, as `runyard notebook` and `runyard run NB.ipynb`
would leave them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.ui.test_dashboard import CHROMIUM, STATIC, numbers_in_table, shot
from tests.unit.server.conftest import LiveServer

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no chromium at {CHROMIUM} (scripts/ensure-chromium)"),
]


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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


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
