"""The run widget's view (src/runyard/notebook/widget.js) in a real browser (Debian's chromium through
Playwright), driven by a model as anywidget hands it one: state to read, change events, and send()
for the Stop button. The kernel's side is tested through a real kernel in
tests/flow/test_notebook_magic.py; this is the part a frontend runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.browser import chromium, needs_chromium

pytest.importorskip("playwright.sync_api")

VIEW = Path(__file__).resolve().parents[2] / "src" / "runyard" / "notebook" / "widget.js"

pytestmark = [
    pytest.mark.timeout(120),
    needs_chromium,
]

# A model as anywidget gives render(): get, on("change"), send; set() is the test's, as a kernel update.
PAGE = """<!doctype html><html><body><div id="el"></div><script type="module">
import view from "/widget.js";
const state = %s, handlers = [];
window.sent = [];
const model = {
  get: (k) => state[k],
  on: (event, f) => { if (event === "change") handlers.push(f); },
  send: (msg) => window.sent.push(msg),
};
window.update = (changes) => { Object.assign(state, changes); handlers.forEach((f) => f()); };
view.render({ model, el: document.getElementById("el") });
window.ready = true;
</script></body></html>"""

STATE = {
    "number": 3, "title": "unet", "status": "running", "message": "", "elapsed": 61.0,
    "url": "http://127.0.0.1:8765/runs/3",
    "metrics": [{"key": "loss", "last": 0.31234, "text": "0.3123", "step": 41, "spark": [1.0, 0.7, 0.5, 0.31]},
                {"key": "system/cpu_percent", "last": None, "text": "nan", "step": 41, "spark": []}],
}


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        # Served by the test itself: nothing leaves the browser.
        page.route("http://widget.test/", lambda r: r.fulfill(body=PAGE % json.dumps(STATE),
                                                               content_type="text/html"))
        page.route("http://widget.test/widget.js", lambda r: r.fulfill(body=VIEW.read_text(),
                                                                       content_type="text/javascript"))
        page.goto("http://widget.test/")
        page.wait_for_function("window.ready === true")
        yield page
        assert errors == []


def test_the_view_shows_the_run_and_its_metrics_and_keeps_the_clock_going(page: Any) -> None:
    link = page.locator("#el a")
    assert link.inner_text() == "run 3 unet"
    assert link.get_attribute("href") == "http://127.0.0.1:8765/runs/3"
    assert page.locator("#el b").inner_text() == "running"
    rows = page.locator("#el div div div")
    assert rows.count() == 2
    assert rows.nth(0).inner_text().split() == ["loss", "0.3123", "(step", "41)"]
    assert rows.nth(1).inner_text().split() == ["system/cpu_percent", "nan", "(step", "41)"]
    assert page.locator("#el polyline").count() == 1  # a sparkline where there are points to draw
    assert page.locator("#el polyline").get_attribute("points").count(",") == 4
    # 61 s when the update came; the view counts on by itself while the run runs
    minutes, seconds = page.locator("#el span").first.inner_text().split(":")
    shown = int(minutes) * 60 + int(seconds)
    assert 61 <= shown < 90
    page.wait_for_function(f"document.querySelector('#el span').textContent === '1:{shown - 60 + 2:02d}'",
                           timeout=10_000)


def test_stop_sends_the_message_the_kernel_acts_on_and_an_ended_run_has_no_button(page: Any) -> None:
    button = page.locator("#el button")
    assert button.inner_text() == "Stop" and button.is_visible()
    button.click()
    assert page.evaluate("window.sent") == [{"type": "stop"}]
    assert button.is_disabled()  # one click is one request
    page.evaluate("window.update({status: 'stopped', elapsed: 70, message: 'exit code -15: stopped by a person'})")
    assert page.locator("#el b").inner_text() == "stopped"
    assert not button.is_visible()
    assert "stopped by a person" in page.locator("#el").inner_text()
    clock = page.locator("#el span").first.inner_text()
    page.wait_for_timeout(1500)
    assert page.locator("#el span").first.inner_text() == clock == "1:10"  # an ended run's time stands still
