"""A model served through a runyard server: `runyard serve` with RUNYARD_SERVER starts it on the
server's machine, and teammates reach it at /serve/NAME/ on the server's lab origin with their
tokens (scripts: a bearer token; browsers: a one-time link), never without one, never on the
dashboard's origin. One real server, one trained run and one model server, shared in order."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.browser import chromium, needs_chromium
from tests.flow.test_execution import TERMINAL, wait_status
from tests.flow.test_lab_proxy import cli, token
from tests.unit.server.conftest import LiveServer, client_env, free_port, home_env

from runyard.agent import stop_agents

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).parents[2]


@dataclass
class Served:
    server: LiveServer
    lab_port: int
    writer: dict[str, str]
    reader: dict[str, str]
    secrets: dict[str, str]
    project: Path
    number: int
    url: str
    link: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serveremote")
    db = f"sqlite:///{root / 'runyard.db'}"
    server_env = home_env(root / "server-home", db)
    secrets = {role: token(server_env, root, role) for role in ("writer", "reader")}
    limited = json.loads(cli(server_env, root, "token", "create", "--role", "reader", "--name", "other",
                             "--project", "other", "--json").stdout)
    secrets["other"] = str(limited["token"])
    lab_port = free_port()
    server = LiveServer(root / "server-home", db, insecure_local=False, args=("--lab-port", str(lab_port)))
    server.start()
    project = root / "project"
    shutil.copytree(ROOT / "examples" / "digits", project / "examples" / "digits")
    writer = client_env(root / "client-writer", server.url, secrets["writer"])
    reader = client_env(root / "client-reader", server.url, secrets["reader"])
    try:
        trained = json.loads(cli(writer, project, "run", "--json", "--", sys.executable,
                                 "examples/digits/train.py").stdout)["number"]
        assert wait_status(writer, project, trained, TERMINAL, timeout=120) == "finished"
        started = json.loads(cli(writer, project, "serve", f"{trained}:model", "--handler",
                                 "examples/digits/serve.py:Digits", "--name", "digits", "--json").stdout)
        yield Served(server, lab_port, writer, reader, secrets, project, int(started["number"]), started["url"],
                     started["link"])
    finally:
        server.kill()
        stop_agents(server.home)


def test_through_a_server_the_model_answers_at_serve_name_on_the_lab_origin_with_a_token(served: Served) -> None:
    assert served.url == f"http://127.0.0.1:{served.lab_port}/serve/digits/"
    bearer = {"authorization": f"Bearer {served.secrets['reader']}"}
    schema = httpx.get(served.url + "openapi.json", headers=bearer, timeout=10)
    assert schema.status_code == 200
    example = schema.json()["x-runyard-examples"][4]
    answer = httpx.post(served.url + "predict", json=example, headers=bearer, timeout=30)
    assert answer.status_code == 200, answer.text
    scores = answer.json()["output"]
    assert max(scores, key=lambda k: scores[k]) == "4"
    wrong = httpx.post(served.url + "predict", json={"image": "x"}, headers=bearer, timeout=30)
    assert wrong.status_code == 422 and wrong.json()["field"] == "image"  # the model server's own answer
    assert httpx.get(served.url.rstrip("/"), headers=bearer, timeout=10).headers["location"] == "/serve/digits/"


def test_without_a_valid_token_or_on_the_dashboards_origin_nothing_is_served(served: Served) -> None:
    none = httpx.post(served.url + "predict", json={}, timeout=10)
    assert none.status_code == 401 and "needs a token" in none.json()["error"]
    assert none.headers["www-authenticate"] == "Bearer"
    forged = httpx.get(served.url + "ready", headers={"authorization": "Bearer not-a-token"}, timeout=10)
    assert forged.status_code == 401
    other = httpx.get(served.url + "ready", headers={"authorization": f"Bearer {served.secrets['other']}"},
                      timeout=10)
    assert other.status_code == 403 and "limited to project other" in other.text
    # Strangers learn nothing of which names are served: a name nobody serves is the same 401.
    assert httpx.get(f"http://127.0.0.1:{served.lab_port}/serve/nothing/", timeout=10).status_code == 401
    bearer = {"authorization": f"Bearer {served.secrets['reader']}"}
    unknown = httpx.get(f"http://127.0.0.1:{served.lab_port}/serve/nothing/", headers=bearer, timeout=10)
    assert unknown.status_code == 404
    # The dashboard's origin has no /serve/: a model's pages never run beside the dashboard's session.
    on_api = httpx.get(f"{served.server.url}/serve/digits/", headers=bearer, timeout=10)
    assert on_api.status_code == 404 or "Digits" not in on_api.text


def test_a_browser_link_works_once_and_its_cookie_is_kept_to_the_models_path(served: Served) -> None:
    first = httpx.get(served.link, timeout=10)
    assert first.status_code == 303 and first.headers["location"] == "/serve/digits/"
    cookie = first.headers["set-cookie"]
    assert "Path=/serve/digits/" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert httpx.get(served.link, timeout=10).status_code == 401  # used up
    jar = {"runyard_lab": first.cookies["runyard_lab"]}
    page = httpx.get(served.url, cookies=jar, timeout=10)
    assert page.status_code == 200 and "demo.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert httpx.get(served.url + "ready", cookies={"runyard_lab": "forged"}, timeout=10).status_code == 401


@needs_chromium
def test_a_teammate_opens_the_demo_page_from_the_dashboard_and_gets_a_prediction(served: Served) -> None:
    """In a real browser: a reader logged in to the dashboard opens the serve run's page (badge
    serve), clicks Open demo page, and the new tab is the model's demo page on the lab origin."""
    from playwright.sync_api import expect

    reader = {"authorization": f"Bearer {served.secrets['reader']}"}
    code = httpx.post(f"{served.server.url}/api/v1/login-codes", json={}, headers=reader, timeout=10).json()
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{served.server.url}{code['path']}&next=/runs/{served.number}")
        page.locator("[data-testid=open-demo]").wait_for(timeout=30_000)
        assert page.locator("[data-testid=run-kind]").inner_text() == "serve"
        with page.context.expect_page() as opened:
            page.locator("[data-testid=open-demo]").click()
        tab = opened.value
        tab.wait_for_url(served.url, timeout=30_000)
        tab.wait_for_selector("#status.ready", timeout=20_000)
        tab.click("#example-buttons .example >> nth=3")
        expect(tab.locator("#answer")).to_have_text("3", timeout=20_000)
        assert page.locator("[data-testid=lab-error]").count() == 0
    # The CLI gives a browser link too (on stderr; in --json as "link").
    again = json.loads(cli(served.reader, served.project, "serve", "--url", str(served.number), "--json").stdout)
    assert again["url"] == served.url and again["link"].startswith(served.url + "?ticket=")


def test_stopping_the_serve_run_takes_the_model_off_the_server(served: Served) -> None:
    cli(served.writer, served.project, "stop", str(served.number))
    assert wait_status(served.writer, served.project, served.number, TERMINAL, timeout=60) == "stopped"
    bearer = {"authorization": f"Bearer {served.secrets['reader']}"}
    gone = httpx.get(served.url + "ready", headers=bearer, timeout=10)
    assert gone.status_code == 404 and gone.json()["error"].startswith("nothing is served as 'digits'")
