"""A JupyterLab run reached through the runyard server: `runyard notebook` with RUNYARD_SERVER, a
one-time ticket, the lab origin's session cookie, HTTP and the kernel websocket proxied, and every
refusal (a used ticket, no cookie, another run's cookie, a reader, the dashboard's port, an ended run,
a revoked token). One real server, one real JupyterLab run through the server's agent, shared by the
tests of this module (in order)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.flow.test_execution import wait_for
from tests.flow.test_notebook_lab import cell_messages
from tests.unit.server.conftest import LiveServer, client_env, free_port, home_env

from runyard.agent import stop_agents

pytestmark = pytest.mark.timeout(300)

RUNYARD = [sys.executable, "-m", "runyard.cli.main"]


def cli(env: dict[str, str], cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*RUNYARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=180)
    if check and done.returncode != 0:
        raise AssertionError(f"runyard {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Lab:
    server: LiveServer
    lab_port: int
    #: Environments of client machines: a writer's and a reader's token.
    writer: dict[str, str]
    reader: dict[str, str]
    admin: dict[str, str]
    project: Path
    number: int
    run_id: str
    #: What `runyard notebook` printed: a link with a ticket, unused.
    url: str

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.lab_port}"

    def ticket(self, env: dict[str, str] | None = None) -> str:
        """A fresh link to the run's JupyterLab, as `runyard notebook --url` prints it."""
        done = cli(env or self.writer, self.project, "notebook", "--url", str(self.number), "--json")
        return str(json.loads(done.stdout)["url"])

    def session(self, url: str | None = None) -> str:
        """The lab cookie a browser gets for a link."""
        answer = httpx.get(url or self.ticket(), timeout=10)
        assert answer.status_code == 303, answer.text
        return str(answer.cookies["runyard_lab"])


def token(server_env: dict[str, str], cwd: Path, role: str) -> str:
    made = json.loads(cli(server_env, cwd, "token", "create", "--role", role, "--name", role, "--json").stdout)
    return str(made["token"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("labproxy")
    db = f"sqlite:///{root / 'runyard.db'}"
    server_env = home_env(root / "server-home", db)
    tokens = {role: token(server_env, root, role) for role in ("admin", "writer", "reader")}
    lab_port = free_port()
    server = LiveServer(root / "server-home", db, insecure_local=False,
                        args=("--lab-port", str(lab_port), "--max-upload", "1"))
    server.start()
    project = root / "project"
    project.mkdir()
    (project / "data.csv").write_text("x,y\n1,2\n")
    envs = {role: client_env(root / f"client-{role}", server.url, secret) for role, secret in tokens.items()}
    try:
        started = json.loads(cli(envs["writer"], project, "notebook", "--idle", "10m", "--wait", "150",
                                 "--json").stdout)
        number, url = started["number"], started["url"]
        assert url and url.startswith(f"http://127.0.0.1:{lab_port}/lab/"), started
        run_id = url.split("/lab/", 1)[1].split("/", 1)[0]
        shown = json.loads(cli(envs["writer"], project, "show", str(number), "--json").stdout)
        assert shown["kind"] == "jupyterlab" and "jupyterlab" in shown["labels"] and shown["id"] == run_id
        assert shown["command"] == [sys.executable, "-m", "runyard.notebook.labrun"]  # the server's Python
        yield Lab(server, lab_port, envs["writer"], envs["reader"], envs["admin"], project, number, run_id, url)
    finally:
        server.kill()
        stop_agents(server.home)  # the server's agent, and the runs it started


def test_runyard_notebook_through_a_server_prints_a_one_time_link_that_opens_jupyterlab(lab: Lab) -> None:
    first = httpx.get(lab.url, timeout=10)
    assert first.status_code == 303 and first.headers["location"] == f"/lab/{lab.run_id}/lab"
    cookie = first.headers["set-cookie"]
    assert f"Path=/lab/{lab.run_id}/" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    session = first.cookies["runyard_lab"]
    # The link works once.
    again = httpx.get(lab.url, timeout=10)
    assert again.status_code == 401 and "used up" in again.text
    jar = {"runyard_lab": session}
    status = httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", cookies=jar, timeout=10)
    assert status.status_code == 200 and "kernels" in status.json()
    page = httpx.get(f"{lab.origin}/lab/{lab.run_id}/lab", cookies=jar, timeout=30)
    assert page.status_code == 200 and "JupyterLab" in page.text
    assert not any(c.startswith("username-") for c in page.cookies)  # no login to JupyterLab itself
    listing = httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/contents", cookies=jar, timeout=10).json()
    assert "data.csv" in {item["name"] for item in listing["content"]}
    # A state-changing request from the lab origin's own page passes; from another origin it does not.
    made = {"type": "notebook", "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}}
    put = httpx.put(f"{lab.origin}/lab/{lab.run_id}/api/contents/analysis.ipynb", cookies=jar, json=made,
                    headers={"origin": lab.origin}, timeout=10)
    assert put.status_code in (200, 201), put.text
    forged = httpx.delete(f"{lab.origin}/lab/{lab.run_id}/api/contents/analysis.ipynb", cookies=jar,
                          headers={"origin": "http://evil.example"}, timeout=10)
    assert forged.status_code == 403
    # The API's answer, as the dashboard's Open button asks it.
    asked = httpx.post(f"{lab.server.url}/api/v1/runs/{lab.number}/lab", json={},
                       headers={"authorization": f"Bearer {lab.writer['RUNYARD_TOKEN']}"}, timeout=10)
    assert asked.status_code == 200 and asked.json()["expires_in"] == 120
    assert asked.json()["url"].startswith(f"http://127.0.0.1:{lab.lab_port}/lab/{lab.run_id}/?ticket=")


def test_a_body_past_the_servers_upload_limit_is_refused(lab: Lab) -> None:
    jar = {"runyard_lab": lab.session()}
    url = f"{lab.origin}/lab/{lab.run_id}/api/contents/big.txt"
    big = b"x" * (1 << 20) + b"x"
    said = httpx.put(url, cookies=jar, content=big, headers={"origin": lab.origin}, timeout=30)
    assert said.status_code == 413

    def pieces() -> Iterator[bytes]:
        for _ in range(5):
            yield b"x" * (256 << 10)

    streamed = httpx.put(url, cookies=jar, content=pieces(), headers={"origin": lab.origin}, timeout=30)
    assert streamed.status_code == 413
    assert httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", cookies=jar, timeout=10).status_code == 200


def run_cell(url: str, cookie: str, origin: str, code: str) -> str:
    """What a cell prints, run over kernel channels' websocket ``url`` as a browser on ``origin`` would."""
    messages = cell_messages(url, cookie, code, origin=origin)
    return "".join(str(m["content"]["text"]) for m in messages if m["msg_type"] == "stream").strip()


def test_a_cell_runs_in_a_kernel_over_the_websocket_through_the_proxy(lab: Lab) -> None:
    import websocket

    jar = {"runyard_lab": lab.session()}
    kernel = httpx.post(f"{lab.origin}/lab/{lab.run_id}/api/kernels", cookies=jar, json={"name": "python3"},
                        headers={"origin": lab.origin}, timeout=60)
    assert kernel.status_code == 201, kernel.text
    url = f"ws://127.0.0.1:{lab.lab_port}/lab/{lab.run_id}/api/kernels/{kernel.json()['id']}/channels"
    cookie = f"Cookie: runyard_lab={jar['runyard_lab']}"
    assert run_cell(url, cookie, lab.origin, "print(6 * 7)") == "42"
    # JupyterLab's own subprotocol is passed on, and answered.
    protocol = "v1.kernel.websocket.jupyter.org"
    ws = websocket.create_connection(url, header=[cookie], origin=lab.origin, subprotocols=[protocol], timeout=30)
    assert ws.getsubprotocol() == protocol
    ws.close()
    # Neither another site's page nor a browser without the session opens one.
    for headers, origin in (([cookie], "http://evil.example"), ([], lab.origin)):
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(url, header=headers, origin=origin, timeout=10)


def test_without_a_session_or_with_another_runs_it_is_refused(lab: Lab) -> None:
    session = lab.session()
    bare = httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", timeout=10)
    assert bare.status_code == 401 and "runyard notebook --url" in bare.text
    other = "0" * 26  # another run's path: its cookie path differs, and a cookie of run A is not one of it
    assert httpx.get(f"{lab.origin}/lab/{other}/api/status", cookies={"runyard_lab": session},
                     timeout=10).status_code == 401
    # A ticket of run A presented at run B's path is used up, and opens nothing.
    url = lab.ticket()
    assert httpx.get(url.replace(lab.run_id, other), timeout=10).status_code == 401
    assert httpx.get(url, timeout=10).status_code == 401
    # A reader may not open a JupyterLab (it runs code on the server's machine).
    refused = cli(lab.reader, lab.project, "notebook", "--url", str(lab.number), check=False)
    assert refused.returncode != 0 and "writer" in refused.stderr
    answer = httpx.post(f"{lab.server.url}/api/v1/runs/{lab.number}/lab", json={},
                        headers={"authorization": f"Bearer {lab.reader['RUNYARD_TOKEN']}"}, timeout=10)
    assert answer.status_code == 403


def test_the_dashboards_port_serves_no_jupyterlab(lab: Lab) -> None:
    url = lab.ticket()
    on_api = url.replace(f":{lab.lab_port}/", f":{lab.server.port}/")
    writer = {"authorization": f"Bearer {lab.writer['RUNYARD_TOKEN']}"}
    answer = httpx.get(on_api, headers=writer, timeout=10)
    assert answer.status_code == 404 and "set-cookie" not in answer.headers
    assert httpx.get(f"{lab.server.url}/lab/{lab.run_id}/api/status", headers=writer, timeout=10).status_code == 404
    assert httpx.get(url, timeout=10).status_code == 303  # the ticket was not spent there
    # Nor does the lab origin serve the API, nor answer to a name that is not the server's (DNS rebinding).
    assert httpx.get(f"{lab.origin}/api/v1/runs", headers=writer, timeout=10).status_code == 404
    assert httpx.get(url, headers={"host": f"evil.example:{lab.lab_port}"}, timeout=10).status_code == 400
    assert httpx.get(url, timeout=10).status_code == 401  # used above


def test_the_dashboards_open_button_lands_a_teammate_in_the_runs_jupyterlab(lab: Lab) -> None:
    """The whole path in a real browser: a teammate logged in to the dashboard with a writer's token
    clicks Open JupyterLab on the run's page, and the new tab is JupyterLab itself, listing the run's
    files, served through the lab origin."""
    from tests.browser import CHROMIUM, chromium

    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM} (scripts/ensure-chromium)")
    writer = {"authorization": f"Bearer {lab.writer['RUNYARD_TOKEN']}"}
    code = httpx.post(f"{lab.server.url}/api/v1/login-codes", json={}, headers=writer, timeout=10).json()
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f"{lab.server.url}{code['path']}&next=/runs/{lab.number}")
        page.locator("[data-testid=open-lab]").wait_for(timeout=30_000)
        with page.context.expect_page() as opened:
            page.locator("[data-testid=open-lab]").click()
        tab = opened.value
        tab.wait_for_url(f"{lab.origin}/lab/{lab.run_id}/lab**", timeout=30_000)
        # JupyterLab's own file browser, filled by its API calls through the proxy.
        tab.get_by_text("data.csv").first.wait_for(timeout=60_000)
        assert page.locator("[data-testid=lab-error]").count() == 0


def test_a_revoked_token_ends_its_sessions(lab: Lab) -> None:
    server_env = home_env(lab.server.home, lab.server.db_url)
    secret = token(server_env, lab.project, "writer")
    env = {**lab.writer, "RUNYARD_TOKEN": secret}
    jar = {"runyard_lab": lab.session(lab.ticket(env))}
    assert httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", cookies=jar, timeout=10).status_code == 200
    listed = json.loads(cli(server_env, lab.project, "token", "list", "--json").stdout)
    made = max(t["id"] for t in listed if t["role"] == "writer")
    cli(server_env, lab.project, "token", "revoke", str(made))
    wait_for(lambda: httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", cookies=jar,
                               timeout=10).status_code == 401, 15, "the session to end")


def test_once_the_run_has_stopped_its_session_and_tickets_are_refused(lab: Lab) -> None:
    jar = {"runyard_lab": lab.session()}
    cli(lab.writer, lab.project, "stop", str(lab.number))

    def ended() -> bool:
        shown = json.loads(cli(lab.writer, lab.project, "show", str(lab.number), "--json").stdout)
        return shown["status"] in ("stopped", "finished", "failed")

    wait_for(ended, 90, "the run to stop")
    wait_for(lambda: httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", cookies=jar,
                               timeout=10).status_code == 410, 15, "the session to be refused")
    gone = cli(lab.writer, lab.project, "notebook", "--url", str(lab.number), check=False)
    assert gone.returncode != 0 and "ended" in gone.stderr
    # Without a server, --on ray has no lab origin to be reached through: refused before anything queues.
    alone = {k: v for k, v in lab.writer.items() if k not in ("RUNYARD_SERVER", "RUNYARD_TOKEN")}
    ray = cli(alone, lab.project, "notebook", "--on", "ray", check=False)
    assert ray.returncode == 2 and "RUNYARD_SERVER" in ray.stderr, ray.stderr


def test_a_stopped_notebook_run_resumes_through_the_server(lab: Lab) -> None:
    again = json.loads(cli(lab.writer, lab.project, "notebook", "--resume", str(lab.number), "--idle", "10m",
                           "--wait", "150", "--json").stdout)
    assert again["number"] != lab.number and again["url"]
    resumed = again["url"].split("/lab/", 1)[1].split("/", 1)[0]
    jar = {"runyard_lab": lab.session(again["url"])}
    kept = httpx.get(f"{lab.origin}/lab/{resumed}/api/contents/analysis.ipynb", cookies=jar, timeout=10)
    assert kept.status_code == 200  # written through the proxy into run 1, kept, restored here
    # This run's cookie is no key to the first run's path (nor would the browser send it there).
    assert httpx.get(f"{lab.origin}/lab/{lab.run_id}/api/status", cookies=jar, timeout=10).status_code == 401
    cli(lab.writer, lab.project, "stop", str(again["number"]))
