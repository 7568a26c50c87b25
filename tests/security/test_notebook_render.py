"""Issue 16: an executed notebook is shown as a page converted on the server, and nothing of its
scripts survives the conversion. A notebook whose markdown and outputs carry script (``<script>``,
``<img onerror>``, ``<svg onload>``, ``javascript:`` links, iframes, objects, a JavaScript output, a
widget view) comes out as its text, code, image and traceback, with none of that markup left, under a
Content-Security-Policy that allows no script at all. It is read as its download is: another
project's token is refused, and a notebook past the size limit is refused before being read."""

from __future__ import annotations

import base64
import struct
import sys
import threading
import time
import zlib
from html.parser import HTMLParser
from pathlib import Path

import httpx
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from tests.security.servers import serving
from tests.unit.server.conftest import Served, home_env
from tests.unit.server.conftest import api as api

from runyard.config import resolve
from runyard.server import notebook_html
from runyard.server.capacity import Limits
from runyard.store.api import NewRun
from runyard.store.home import open_store
from runyard.store.tokens import Tokens
from runyard.types import RunStatus

__all__ = ["api"]  # fixture, imported to be used here

pytestmark = [pytest.mark.timeout(120), pytest.mark.engines("sqlite")]

PATH = "outputs/report.ipynb"
URL = f"/api/v1/runs/1/rendered/{PATH}"
#: Every payload calls this name; it must appear nowhere in the page.
PAYLOAD = "exfiltrate"


def png(width: int = 3, height: int = 2) -> bytes:
    """A real PNG (red pixels), built by hand so the test needs no imaging library."""
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


PNG_B64 = base64.b64encode(png()).decode()


def hostile_notebook() -> bytes:
    """An executed notebook whose markdown and outputs try every way of running script."""
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nb.cells = [
        new_markdown_cell("# Quarterly loss report\n\nThe *loss* fell by half at $\\alpha < 0.01$.\n\n"
                          f"<script>{PAYLOAD}('md')</script>"
                          f"\n\n<a href=\"javascript:{PAYLOAD}('link')\">details</a>"
                          f"\n\n<img src=x onerror=\"{PAYLOAD}('md-img')\">"
                          "\n\nAs in [the paper](https://example.org/paper)."),
        new_code_cell("print('training done')\nresults.plot()", execution_count=3, outputs=[
            new_output("stream", name="stdout", text="training done\n"),
            new_output("display_data", data={
                "text/html": (f"<p>Table of results</p><img src=x onerror=\"{PAYLOAD}('img')\">"
                              f"<svg onload=\"{PAYLOAD}('svg')\"><script>{PAYLOAD}('svg-script')</script></svg>"
                              f"<a href=\"javascript:{PAYLOAD}('a')\">open</a>"
                              f"<a href=\"JaVaScRiPt:{PAYLOAD}('A')\">open too</a>"
                              f"<iframe src=\"javascript:{PAYLOAD}('iframe')\"></iframe>"
                              f"<iframe srcdoc=\"<script>{PAYLOAD}('srcdoc')</script>\"></iframe>"
                              f"<object data=\"data:text/html,{PAYLOAD}\"></object><embed src=\"{PAYLOAD}.swf\">"
                              f"<form action=\"https://example.com/{PAYLOAD}\"><button>go</button></form>"
                              f"<div style=\"background:url(https://example.com/{PAYLOAD})\">styled</div>"
                              f"<a href=\"data:text/html,<script>{PAYLOAD}()</script>\">data link</a>"
                              f"<img src=\"data:text/html,<script>{PAYLOAD}()</script>\">"
                              f"<meta http-equiv=\"refresh\" content=\"0;url=https://example.com/{PAYLOAD}\">"
                              f"<base href=\"https://example.com/{PAYLOAD}/\">"
                              f"<style>body {{ background: url(https://example.com/{PAYLOAD}) }}</style>"),
                "text/plain": "<results>"}),
            new_output("display_data", data={"application/javascript": f"{PAYLOAD}('js')",
                                             "text/plain": "<IPython.core.display.Javascript object>"}),
            new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": PAYLOAD, "version_major": 2,
                                                             "version_minor": 0},
                "text/plain": f"IntSlider({PAYLOAD})"}),
            new_output("display_data", data={"image/png": PNG_B64, "text/plain": "<Figure size 640x480>"}),
            new_output("display_data", data={
                "image/svg+xml": f"<svg xmlns='http://www.w3.org/2000/svg' onload=\"{PAYLOAD}('svg-img')\"/>"}),
            new_output("execute_result", execution_count=3, data={"text/plain": "0.125"}),
        ]),
        new_markdown_cell("The curve: ![loss curve](attachment:curve.png)",
                          attachments={"curve.png": {"image/png": PNG_B64}}),
        new_code_cell("1 / 0", execution_count=4, outputs=[
            new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                       traceback=["\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"])]),
    ]
    return nbformat.writes(nb).encode()


class Page(HTMLParser):
    """What a browser would build of the page: elements with their attributes, and its text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}


def a_run_with(api: Served, data: bytes, path: str = PATH, project: str = "a") -> int:
    number = api.store.create_run(NewRun(project=project, name="report", status=RunStatus.FINISHED)).number
    blob = api.opened.artifacts.put_bytes(data)
    api.store.record_artifact(number, path, blob.size, blob.sha256, blob.content_ref)
    return int(number)


def test_script_in_a_notebook_does_not_survive_but_its_content_does(api: Served) -> None:
    a_run_with(api, hostile_notebook())
    answer = api.client.get(URL)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    parsed = Page(page)

    # Nothing that runs, loads or navigates is left.
    assert PAYLOAD not in page
    assert not parsed.tags() & {"script", "iframe", "object", "embed", "svg", "form", "base", "button", "link"}
    for tag, attrs in parsed.elements:
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("src", "action", "srcdoc", "data", "formaction", "poster"):
            value = (attrs.get(name) or "").strip().lower()
            assert not value or (tag == "img" and name == "src" and value.startswith("data:image/")), (tag, attrs)
        if (href := attrs.get("href")) is not None:  # links go to web pages, in a tab of their own
            assert tag == "a" and href.startswith("https://"), (tag, attrs)
            assert attrs["target"] == "_blank" and attrs["rel"] == "noopener noreferrer"
    links = [attrs["href"] for tag, attrs in parsed.elements if tag == "a" and attrs.get("href")]
    assert links == ["https://example.org/paper"]
    assert len([t for t, _ in parsed.elements if t == "style"]) == 1  # the page's own, none of the notebook's

    # What a reader came for is all there.
    text = "".join(parsed.text)
    for shown in ("Quarterly loss report", "The loss fell by half at $\\alpha < 0.01$.", "print('training done')",
                  "training done", "Table of results", "0.125", "ZeroDivisionError: division by zero", "In [3]:",
                  "Out[3]:"):
        assert shown in text, shown
    assert f'<img class="image" alt="" src="data:image/png;base64,{PNG_B64}">' in page  # the figure
    assert f'<img class="image" alt="loss curve" src="data:image/png;base64,{PNG_B64}">' in page  # attached
    assert "data:image/svg+xml;base64," in page  # an SVG is shown as an image, where it runs nothing
    assert "\x1b" not in page  # the traceback's colours became spans
    assert '<span class="ansi-red-fg">ZeroDivisionError</span>' in page
    assert "interactive widget: not shown" in text and "a script: not shown" in text

    # Even a sanitiser miss could not run: no script may run at all, in a sandbox, whoever opens it.
    csp = answer.headers["content-security-policy"]
    assert csp == notebook_html.PAGE_CSP
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["default-src"] == ["'none'"] and "script-src" not in directives
    assert directives["sandbox"] == ["allow-popups", "allow-popups-to-escape-sandbox"]  # no scripts, opaque
    assert directives["img-src"] == ["data:"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    meta = [attrs for tag, attrs in parsed.elements if tag == "meta" and attrs.get("http-equiv")]
    assert meta == [{"http-equiv": "Content-Security-Policy", "content": notebook_html.META_CSP}]


def test_only_notebooks_are_rendered_and_errors_say_why(api: Served) -> None:
    number = a_run_with(api, b"print('hi')\n", path="train.py")
    blob = api.opened.artifacts.put_bytes(b"{not json")
    api.store.record_artifact(number, "outputs/broken.ipynb", blob.size, blob.sha256, blob.content_ref)
    not_notebook = api.client.get(f"/api/v1/runs/{number}/rendered/train.py")
    assert not_notebook.status_code == 400 and "only .ipynb" in not_notebook.json()["error"]
    missing = api.client.get(f"/api/v1/runs/{number}/rendered/outputs/none.ipynb")
    assert missing.status_code == 404 and "no artifact 'outputs/none.ipynb'" in missing.json()["error"]
    broken = api.client.get(f"/api/v1/runs/{number}/rendered/outputs/broken.ipynb")
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
    escaping = api.client.get(f"/api/v1/runs/{number}/rendered/../x.ipynb")
    assert escaping.status_code in (400, 404)
    no_run = api.client.get(f"/api/v1/runs/99/rendered/{PATH}")
    assert no_run.status_code == 404


def test_another_project_s_token_is_refused(api: Served) -> None:
    a_run_with(api, hostile_notebook(), project="a")
    made = Tokens(api.store)
    _, b_reader = made.create("reader", "b-reader", project="b")
    _, a_reader = made.create("reader", "a-reader", project="a")
    api.client.app.state.policy.tokens_check_interval = 0
    refused = api.client.get(URL, headers={"authorization": f"Bearer {b_reader}"})
    assert refused.status_code == 404 and refused.json()["error"]
    assert "Quarterly" not in refused.text
    assert api.client.get(URL).status_code == 401  # once tokens exist, none is no one
    allowed = api.client.get(URL, headers={"authorization": f"Bearer {a_reader}"})
    assert allowed.status_code == 200 and "Quarterly loss report" in allowed.text


def test_a_notebook_past_the_limit_is_refused_before_it_is_read(api: Served) -> None:
    pad = b"x" * (notebook_html.MAX_NOTEBOOK + 1)
    a_run_with(api, b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [], "pad": "' + pad + b'"}')
    answer = api.client.get(URL)
    assert answer.status_code == 413
    assert "download it instead" in answer.json()["error"] and "50 MiB" in answer.json()["error"]


def test_a_page_shown_before_is_answered_from_its_tag(api: Served) -> None:
    a_run_with(api, hostile_notebook())
    first = api.client.get(URL)
    again = api.client.get(URL, headers={"if-none-match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert api.client.get(URL).text == first.text


def big_notebook(cells: int = 800) -> bytes:
    """About 16 MiB: cells of code, printed lines, a figure and a table each (what a long
    training notebook holds)."""
    figure = base64.b64encode(png(90, 60) + bytes(15000)).decode()
    nb = new_notebook()
    for i in range(cells):
        nb.cells.append(new_markdown_cell(f"## Epoch {i}\n\nThe *loss* after epoch {i}."))
        nb.cells.append(new_code_cell(f"for batch in loader:\n    step({i})\nplot()", execution_count=i, outputs=[
            new_output("stream", name="stdout", text="".join(f"batch {j}\n" for j in range(10))),
            new_output("display_data", data={"image/png": figure, "text/plain": "<Figure>"}),
            new_output("display_data", data={"text/html": "<table><tr><td>1</td></tr></table>", "text/plain": "1"}),
        ]))
    return nbformat.writes(nb).encode()


def test_a_big_notebook_is_converted_while_other_requests_are_answered(tmp_path: Path, db_url: str) -> None:
    data = big_notebook()
    opened = open_store(resolve(environ=home_env(tmp_path / "tuned-home", db_url), cwd=tmp_path))
    try:
        number = opened.store.create_run(NewRun(project="a", name="big", status=RunStatus.FINISHED)).number
        blob = opened.artifacts.put_bytes(data)
        opened.store.record_artifact(number, PATH, blob.size, blob.sha256, blob.content_ref)
    finally:
        opened.close()
    with serving(tmp_path, Limits(), db_url) as port:
        base = f"http://127.0.0.1:{port}"
        converted: list[tuple[httpx.Response, float]] = []

        def convert() -> None:
            began = time.monotonic()
            answer = httpx.get(f"{base}/api/v1/runs/{number}/rendered/{PATH}", timeout=120)
            converted.append((answer, time.monotonic() - began))

        converting = threading.Thread(target=convert)
        converting.start()
        waits: list[float] = []
        with httpx.Client(base_url=base, timeout=60) as other:
            while converting.is_alive():
                began = time.monotonic()
                assert other.get("/api/v1/runs").status_code == 200
                waits.append(time.monotonic() - began)
        converting.join()
        answer, took = converted[0]
        assert answer.status_code == 200, answer.text[:300]
        assert answer.text.count('<img class="image"') == 800
        # Converted on a worker thread: the event loop kept answering others in moments. (On the
        # loop, one of them would have waited for most of the conversion.)
        assert len(waits) >= 3 and max(waits) < took / 3, (took, max(waits), len(waits))


def test_a_server_without_the_notebook_extra_says_how_to_get_it(api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nh3", None)  # what `import nh3` meets where it is not installed
    a_run_with(api, hostile_notebook())
    answer = api.client.get(URL)
    assert answer.status_code == 501
    assert "pip install 'runyard[notebook]'" in answer.json()["error"]


def test_the_same_notebook_is_converted_once_whichever_run_holds_it(api: Served,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    conversions: list[int] = []
    render = notebook_html.render
    monkeypatch.setattr(notebook_html, "render", lambda data, title: conversions.append(1) or render(data, title))
    report = hostile_notebook()  # (made once: each cell gets a random id)
    first, second = a_run_with(api, report), a_run_with(api, report)
    pages = [api.client.get(f"/api/v1/runs/{n}/rendered/{PATH}").text for n in (first, second, first)]
    assert pages[0] == pages[1] == pages[2] and "Quarterly loss report" in pages[0]
    assert len(conversions) == 1  # kept by content, not by run
    # The same content under another name (another project's run): its page says its own name.
    other = a_run_with(api, report, path="outputs/board-minutes.ipynb", project="b")
    page = api.client.get(f"/api/v1/runs/{other}/rendered/outputs/board-minutes.ipynb").text
    assert "board-minutes.ipynb" in page and "report.ipynb" not in page
