"""The demo page for a handler of numbers, a choice and a table, driven in Chromium: the form is
built from the declared types, filled and submitted like a person would, and a refused input is
shown on its field. The model server runs standalone (`python -m runyard.serve.main`, outside any
run), as the container of `--export k8s` runs it."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.browser import chromium, needs_chromium

PRICES = '''
from runyard.serve import Input, Table


class Prices:
    """Prices of a basket, with tax."""

    examples = [{"tax": 20, "currency": "EUR", "basket": [{"item": "tea", "price": 3}]}]

    def load(self, model_dir):
        self.fee = float(open(f"{model_dir}/fee.txt").read())

    def predict(self, tax: float = Input(10, ge=0, le=50, description="percent"),
                currency: str = Input("EUR", choices=["EUR", "USD"]),
                basket: Table = Input(columns=["item", "price"])) -> Table:
        return [{"item": row["item"], "total": round(row["price"] * (1 + tax / 100) + self.fee, 2),
                 "currency": currency} for row in basket]
'''


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    root = tmp_path_factory.mktemp("page")
    (root / "prices.py").write_text(PRICES)
    (root / "model").mkdir()
    (root / "model" / "fee.txt").write_text("0.5")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "RUNYARD_SERVE_WINDOW": "0.3"}
    server = subprocess.Popen([sys.executable, "-m", "runyard.serve.main", "--handler", "prices.py:Prices",
                               "--model", "model", "--port", str(port)], cwd=root, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "ready", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("the model server did not get ready")
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)


@needs_chromium
def test_the_form_is_built_from_the_types_filled_submitted_and_a_refusal_shown_on_its_field(
        standalone: tuple[str, subprocess.Popen[str]]) -> None:
    from playwright.sync_api import expect

    url, _ = standalone
    with chromium() as browser:
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(url)
        page.wait_for_selector("#status.ready", timeout=20_000)
        assert page.text_content("#title") == "Prices"
        assert page.get_attribute("#input-tax", "type") == "number"
        assert page.input_value("#input-tax") == "10"  # its default
        assert page.locator("#input-currency option").all_inner_texts() == ["EUR", "USD"]
        assert page.locator("#input-basket th").all_inner_texts() == ["item", "price"]
        page.fill("#input-tax", "25")
        page.select_option("#input-currency", label="USD")
        cells = page.locator("#input-basket input")
        cells.nth(0).fill("bread")
        cells.nth(1).fill("2")
        page.click(".field[data-field=basket] button")  # + row
        cells.nth(2).fill("milk")
        cells.nth(3).fill("1.2")
        page.click("#predict")
        result = page.locator("#output table.result")
        expect(result).to_be_visible(timeout=20_000)
        assert result.locator("th").all_inner_texts() == ["item", "total", "currency"]
        assert [r.locator("td").all_inner_texts() for r in result.locator("tr").all()[1:]] == [
            ["bread", "3", "USD"], ["milk", "2", "USD"]]
        # Out of bounds: the server's 422 is shown, and the field it names is outlined.
        page.fill("#input-tax", "80")
        page.click("#predict")
        expect(page.locator("#error")).to_have_text(re.compile("tax: must be at most 50"), timeout=20_000)
        expect(page.locator(".field[data-field=tax]")).to_have_class(re.compile("invalid"))
        # The handler's example, one click: filled and predicted.
        page.click("#example-buttons .example")
        expect(page.locator("#output table.result td").first).to_have_text("tea", timeout=20_000)
        assert page.input_value("#input-tax") == "20"
    # The browser reports the refused request itself; nothing else may go wrong on the page.
    assert [e for e in errors if "status of 422" not in e] == [], errors


def test_standalone_it_prints_its_metrics_and_stops_cleanly_on_sigterm(
        standalone: tuple[str, subprocess.Popen[str]]) -> None:
    url, server = standalone
    body = {"basket": {"columns": ["item", "price"], "rows": [["tea", 3]]}}
    assert httpx.post(url + "predict", json=body, timeout=10, trust_env=False).json()["output"] == {
        "columns": ["item", "total", "currency"], "rows": [["tea", 3.8, "EUR"]]}
    server.terminate()  # the last window's requests are printed as it stops
    out, _ = server.communicate(timeout=30)
    # Requests answered, then ended by the signal, as uvicorn does (re-raised once it has shut down).
    assert server.returncode in (0, -signal.SIGTERM), out
    assert "Traceback" not in out
    lines = out.splitlines()
    assert any(line.startswith("POST /predict 200 ") for line in lines)
    metrics = [json.loads(line)["serve"] for line in lines if line.startswith('{"serve"')]
    assert metrics and max(m["requests"] for m in metrics) >= 1
    assert "model loaded in" in out and not Path("serve.json").exists()
