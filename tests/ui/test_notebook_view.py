"""Issue 16: the dashboard shows an executed notebook, in Chromium, and nothing of it executes.

A run launched with `runyard run` writes ``outputs/report.ipynb`` whose markdown and outputs carry
scripts every way a notebook can (``<script>``, ``<img onerror>``, ``<svg onload>``, a JavaScript
output, ``javascript:`` links, iframes, a meta refresh, CSS that loads a URL). Each payload would
call a listener this test runs on loopback, set the dashboard's title, or open a dialog. The run's
page shows the notebook's text, code and figure, and the listener hears nothing, no dialog opens,
the title stays. The frame showing it has an opaque origin (the dashboard cannot reach into it,
so nothing in it can reach the dashboard), a link clicked in it opens in a tab of its own, and
even HTML put into that frame unsanitised runs nothing. The server requires a token, so the page
goes through the dashboard's authenticated fetch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from tests.browser import needs_chromium
from tests.ui.test_dashboard import SHOTS, STATIC, wait_until
from tests.unit.server.conftest import LiveServer, client_env, home_env

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [
    pytest.mark.timeout(300),
    needs_chromium,
]

TITLE_MARK = "pwned"

#: Run by `runyard run`: an "executed notebook" built with nbformat, as a notebook run stores one.
MAKE_REPORT = '''
import base64, struct, zlib, pathlib
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

SPY = "http://127.0.0.1:{port}"
HIT = "fetch('" + SPY + "/{{0}}'); window.top.document.title = '{mark}'; alert('{{0}}')"


def hit(where):
    return HIT.format(where)


def png():
    rows = b"".join(b"\\x00" + b"\\x20\\x60\\xc0" * 40 for _ in range(24))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40, 24, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


html_output = (
    "<p>Results table</p>"
    f"<img src=x onerror=\\"{{hit('img-onerror')}}\\">"
    f"<svg onload=\\"{{hit('svg-onload')}}\\"><circle r=5 /></svg>"
    f"<a id=jslink href=\\"javascript:{{hit('javascript-link')}}\\">click me</a>"
    f"<iframe src=\\"{{SPY}}/iframe\\"></iframe><iframe srcdoc=\\"<script>{{hit('srcdoc')}}</script>\\"></iframe>"
    f"<object data=\\"{{SPY}}/object\\"></object><embed src=\\"{{SPY}}/embed\\"><video src=\\"{{SPY}}/video\\"></video>"
    f"<img src=\\"{{SPY}}/remote-image\\"><link rel=stylesheet href=\\"{{SPY}}/stylesheet\\">"
    f"<style>@import url({{SPY}}/import); body {{{{ background: url({{SPY}}/background) }}}}</style>"
    f"<div style=\\"background-image: url({{SPY}}/inline-style)\\">styled</div>"
    f"<meta http-equiv=refresh content=\\"0;url={{SPY}}/refresh\\">"
    f"<form action=\\"{{SPY}}/form\\"><input name=q value=1><button id=submit>send</button></form>"
)
nb = new_notebook(metadata={{"kernelspec": {{"name": "python3", "language": "python", "display_name": "Python 3"}}}})
nb.cells = [
    new_markdown_cell("# Quarterly loss report\\n\\nThe *loss* fell by half.\\n\\n"
                      f"<script>{{hit('markdown-script')}}</script>\\n\\n"
                      f"<img src=y onerror=\\"{{hit('markdown-img')}}\\">\\n\\n"
                      f"See [the training log]({{SPY}}/followed-link)."),
    new_code_cell("plot(history)", execution_count=7, outputs=[
        new_output("stream", name="stdout", text="epoch 3: loss 0.125\\n"),
        new_output("display_data", data={{"text/html": html_output, "text/plain": "<table>"}}),
        new_output("display_data", data={{"application/javascript": hit("javascript-output"),
                                         "text/plain": "<IPython.core.display.Javascript object>"}}),
        new_output("display_data", data={{"image/png": base64.b64encode(png()).decode(), "text/plain": "<Figure>"}}),
        new_output("execute_result", execution_count=7, data={{"text/plain": "0.125"}}),
    ]),
]
pathlib.Path("outputs").mkdir(exist_ok=True)
pathlib.Path("outputs/report.ipynb").write_text(nbformat.writes(nb))
print("report written")
'''

#: Put straight into the dashboard's frame, past the server's sanitiser: the frame alone must hold.
UNSANITISED = """<p id=raw>raw page</p><script>{hit}</script><img src=x onerror="{hit}">
<meta http-equiv=refresh content="0;url={spy}/raw-refresh"><form id=f action="{spy}/raw-form"></form>
<script>document.getElementById('f').submit()</script>"""


class Listener:
    """An HTTP server on loopback that records every request it gets: what a payload would call."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        heard = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                heard.append(f"{self.command} {self.path}")
                body = b"<!doctype html><title>listener</title><p>heard</p>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.send_header("access-control-allow-origin", "*")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_OPTIONS = do_HEAD = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def heard(self) -> list[str]:
        """The requests, less a favicon that the tab a test opens on purpose asks for."""
        return [r for r in self.requests if r != "GET /favicon.ico"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def listener() -> Iterator[Listener]:
    spy = Listener()
    yield spy
    spy.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, listener: Listener) -> Iterator[tuple[LiveServer, str, int]]:
    """A server that requires a token, and a finished run with the hostile report as its output."""
    if not STATIC.exists():
        pytest.fail("the dashboard is not built: run `make ui`")
    root = tmp_path_factory.mktemp("nbview")
    live = LiveServer(root / "server-home", f"sqlite:///{root / 'runyard.db'}")
    live.start()
    try:
        def token(*options: str) -> str:
            made = subprocess.run([sys.executable, "-m", "runyard.cli.main", "token", "create", *options, "--json"],
                                  env=home_env(live.home, live.db_url), capture_output=True, text=True, timeout=60)
            assert made.returncode == 0, made.stderr
            return str(json.loads(made.stdout)["token"])

        launcher = token("--role", "writer")  # launching needs a token of every project
        reader = token("--role", "reader", "--project", "nb")  # the browser's: a teammate reading project nb
        code = root / "code"
        code.mkdir()
        (code / "make_report.py").write_text(textwrap.dedent(MAKE_REPORT.format(port=listener.port, mark=TITLE_MARK)))
        launched = subprocess.run([sys.executable, "-m", "runyard.cli.main", "run", "--project", "nb", "--name",
                                   "report", "--", sys.executable, "make_report.py"],
                                  env=client_env(root / "laptop", live.url, launcher), cwd=code, capture_output=True,
                                  text=True, timeout=120)
        assert launched.returncode == 0, launched.stderr
        auth = {"authorization": f"Bearer {reader}"}

        def finished() -> int | None:
            run = httpx.get(f"{live.url}/api/v1/runs/report", headers=auth).json()
            assert run.get("status") not in ("failed", "lost"), run
            paths = [a["path"] for a in httpx.get(f"{live.url}/api/v1/runs/report/artifacts", headers=auth).json()]
            return int(run["number"]) if run.get("status") == "finished" and "outputs/report.ipynb" in paths else None

        number = wait_until(finished, 120, "the report run finishes with its notebook stored")
        yield live, reader, number
    finally:  # also when setting up failed: no server outlives its test
        live.kill()


def test_the_run_page_shows_the_notebook_and_nothing_of_it_executes(browser: Any, served: tuple[LiveServer, str, int],
                                                                   listener: Listener) -> None:
    live, token, number = served
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, base_url=live.url)
    context.add_init_script(f"if (window === window.top) localStorage.setItem('runyard.token', {json.dumps(token)})")
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    popups: list[Any] = []
    context.on("page", lambda p: popups.append(p))
    try:
        page.goto(f"/runs/{number}")
        page.locator("[data-testid=run-status]", has_text="finished").wait_for()
        title = page.title()
        page.click("[aria-label='view outputs/report.ipynb']")
        page.wait_for_url("**?notebook=outputs%2Freport.ipynb")
        frame = page.frame_locator("[data-testid=notebook-frame]")

        # The notebook is there, rendered: headings, text, code, stdout, a table's text, the figure.
        frame.locator("h1", has_text="Quarterly loss report").wait_for(timeout=30_000)
        frame.locator("em", has_text="loss").wait_for()
        for text in ("plot(history)", "epoch 3: loss 0.125", "Results table", "Out[7]:", "click me"):
            frame.get_by_text(text).first.wait_for()
        figure = frame.locator("img.image")
        assert figure.get_attribute("src").startswith("data:image/png;base64,")  # type: ignore[union-attr]
        assert figure.evaluate("img => img.naturalWidth") == 40  # decoded and drawn, not a broken image
        assert "a script: not shown" in frame.locator("body").inner_text()

        # Nothing that could run or load is left in the frame, so the browser refused nothing either
        # (a script left would be "Blocked script execution", a remote image a refused load).
        left = frame.locator("script, iframe, object, embed, svg, form, link, base, meta[http-equiv=refresh], "
                             "[onerror], [onload], [onclick], [href^='javascript' i], img[src]:not([src^='data:'])")
        assert left.count() == 0, left.evaluate_all("found => found.map(e => e.outerHTML)")
        page.wait_for_timeout(1500)  # time for anything that might have been started to arrive
        assert problems == [], problems

        # Clicking what a reader would click runs nothing either. (A click in a sandboxed frame makes
        # Chromium log refused scripts of its own, whatever the page holds: not counted from here on.)
        frame.locator("text=click me").click()
        page.wait_for_timeout(1500)
        assert listener.heard() == [], listener.heard()
        assert dialogs == [] and popups == []
        assert page.title() == title and TITLE_MARK not in page.title()
        SHOTS.mkdir(exist_ok=True)
        page.locator("[data-testid=notebook-view]").screenshot(path=str(SHOTS / "notebook.png"))

        # The frame is sandboxed without scripts, in an opaque origin: the dashboard cannot see into
        # it, so nothing in it can see the dashboard's token or call its API as the user.
        sandbox, opaque = page.evaluate("""() => {
            const f = document.querySelector('[data-testid=notebook-frame]');
            return [f.getAttribute('sandbox'), f.contentDocument === null];
        }""")
        assert set(sandbox.split()) == {"allow-popups", "allow-popups-to-escape-sandbox"} and opaque

        # A link the reader clicks opens in a tab of its own, which cannot reach back to the dashboard.
        with context.expect_page() as opened:
            frame.locator("text=the training log").click()
        tab = opened.value
        tab.wait_for_load_state()
        assert tab.url == f"http://127.0.0.1:{listener.port}/followed-link"
        assert tab.evaluate("() => window.opener === null")
        assert listener.heard() == ["GET /followed-link"]
        assert page.title() == title and frame.locator("h1", has_text="Quarterly loss report").is_visible()
        tab.close()
        listener.requests.clear()
        popups.clear()

        # Markup the server would never send, put into the same frame: the frame alone holds.
        page.evaluate("html => { document.querySelector('[data-testid=notebook-frame]').srcdoc = html; }",
                      UNSANITISED.format(hit=f"fetch('http://127.0.0.1:{listener.port}/raw'); "
                                             f"window.top.document.title='{TITLE_MARK}'; alert('raw')",
                                         spy=f"http://127.0.0.1:{listener.port}"))
        frame.locator("#raw").wait_for()
        page.wait_for_timeout(1500)
        assert listener.heard() == [], listener.heard()
        assert dialogs == [] and popups == []
        assert page.title() == title
        assert frame.locator("#raw").is_visible()  # the frame was not navigated away (meta refresh, form)
    finally:
        context.close()


def test_a_notebook_that_cannot_be_shown_says_why_on_the_page(browser: Any,
                                                              served: tuple[LiveServer, str, int]) -> None:
    live, token, number = served
    context = browser.new_context(base_url=live.url)
    context.add_init_script(f"if (window === window.top) localStorage.setItem('runyard.token', {json.dumps(token)})")
    page = context.new_page()
    try:
        page.goto(f"/runs/{number}?notebook=outputs/missing.ipynb")
        error = page.locator("[data-testid=notebook-error]")
        error.wait_for()
        assert "no artifact 'outputs/missing.ipynb'" in error.inner_text()
        page.click("[data-testid=notebook-close]")
        page.wait_for_function("() => !location.search.includes('notebook')")
        assert page.locator("[data-testid=notebook-view]").count() == 0
    finally:
        context.close()
