"""Tickets and sessions of the lab origin (server/lab_access.py), and the API's answers around them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.unit.server.conftest import Served, free_port, home_env

from runyard.server.lab_access import SESSION_TTL, TICKET_TTL, LabAccess

RUN_A, RUN_B = "01J" + "A" * 23, "01J" + "B" * 23


def test_a_ticket_opens_its_run_once_within_two_minutes_as_the_token_that_asked() -> None:
    now = [1000.0]
    access = LabAccess(clock=lambda: now[0])
    ticket = access.ticket(RUN_A, 7)
    made = access.redeem(ticket, RUN_A)
    assert made is not None
    session, grant = made
    assert (grant.run_id, grant.token_id) == (RUN_A, 7)
    assert access.redeem(ticket, RUN_A) is None  # used up
    assert access.session(session, RUN_A) == grant
    assert access.session(session, RUN_B) is None  # run A's cookie is no key to run B
    # A ticket presented at another run's path opens nothing, and is used up.
    other = access.ticket(RUN_A, 7)
    assert access.redeem(other, RUN_B) is None and access.redeem(other, RUN_A) is None
    # It lapses after TICKET_TTL; a session after SESSION_TTL.
    late = access.ticket(RUN_A, 7)
    now[0] += TICKET_TTL
    assert access.redeem(late, RUN_A) is None
    now[0] += SESSION_TTL
    assert access.session(session, RUN_A) is None
    access.end(session)


@pytest.mark.engines("sqlite")
def test_asking_for_a_link_answers_503_when_the_server_serves_no_lab_port(api: Served) -> None:
    answer = api.client.post("/api/v1/runs/1/lab", json={})
    assert answer.status_code == 503 and "--lab-port" in answer.json()["error"]
    assert answer.headers["retry-after"]


def test_a_lab_port_in_use_stops_the_server_with_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = home_env(tmp_path / "home", f"sqlite:///{tmp_path / 'runyard.db'}")
        done = subprocess.run([sys.executable, "-m", "runyard.cli.main", "server", "--insecure-local", "--port",
                               str(free_port()), "--lab-port", str(port)], env=env, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode != 0 and f"127.0.0.1:{port}" in done.stderr and "--lab-port 0" in done.stderr


def test_jupyterlab_is_sent_its_token_and_its_own_cookies_only() -> None:
    from runyard.server.lab import Upstream, _forwarded

    scope = {"type": "http", "headers": [
        (b"host", b"yard.internal:8766"), (b"origin", b"http://yard.internal:8766"),
        (b"authorization", b"Bearer ry_someone"), (b"accept", b"application/json"),
        # Cookies know no port: the dashboard's session comes along with the lab's.
        (b"cookie", b"runyard_session=dashboard; runyard_lab=lab; _xsrf=x; grafana_session=g")]}
    sent = dict(_forwarded(scope, Upstream(1234, "jupyter-token")))
    assert sent == {"accept": "application/json", "cookie": "_xsrf=x", "authorization": "token jupyter-token"}


def test_runyard_ui_says_at_once_why_its_server_did_not_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        lab_port = taken.getsockname()[1]
        env = home_env(tmp_path / "home", f"sqlite:///{tmp_path / 'runyard.db'}")
        done = subprocess.run([sys.executable, "-m", "runyard.cli.main", "ui", "--no-browser", "--port",
                               str(lab_port - 1)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--lab-port" in done.stderr and "did not start" in done.stderr


@pytest.mark.engines("sqlite")
def test_a_jupyterlab_launch_runs_labrun_on_the_servers_machine_or_a_ray_node_and_nothing_else(
        api: Served, tmp_path: Path) -> None:

    from runyard.exec.snapshot import take
    from runyard.sdk.agent_launch import stop_agents

    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "data.csv").write_text("x\n1\n")
    snapshot = take(tmp_path / "work", api.opened.artifacts, tmp_path / "cache.json").id
    base = {"snapshot": snapshot, "kind": "jupyterlab"}
    labrun = ["python", "-m", "runyard.notebook.labrun"]
    for command, executor in ((["python", "evil.py"], None), (labrun, "kubernetes")):
        answer = api.client.post("/api/v1/runs", json={**base, "command": command, "executor": executor})
        assert answer.status_code == 400, answer.text
        assert "labrun" in answer.json()["error"] or "kubernetes" in answer.json()["error"]
    here = api.client.post("/api/v1/runs", json={**base, "command": ["/usr/bin/python9", *labrun[1:]]}).json()
    on_ray = api.client.post("/api/v1/runs", json={**base, "command": labrun, "executor": "ray"}).json()
    try:
        here_run, ray_run = (api.store.get_run(int(r["number"])) for r in (here, on_ray))
    finally:  # queueing started this home's agent: no JupyterLab may outlive the test
        for queued in (here, on_ray):
            api.client.post(f"/api/v1/runs/{queued['number']}/stop", json={})
        stop_agents(api.home)
    # Here in the server's own Python, whatever the client named; on a node in the node's python.
    assert (here_run.executor, here_run.command) == ("local", [sys.executable, *labrun[1:]])
    assert (ray_run.executor, ray_run.command) == ("ray", labrun)


@pytest.mark.engines("sqlite")
def test_the_lab_origin_says_what_is_wrong_when_a_jupyterlab_is_gone_or_its_run_ended(api: Served) -> None:
    import json

    from fastapi.testclient import TestClient

    from runyard.exec.spec import run_directory
    from runyard.server.lab import CHECK_EVERY, lab_app
    from runyard.store.newrun import NewRun
    from runyard.types import RunKind, RunStatus

    server, policy = api.client.app.state.server, api.client.app.state.policy  # type: ignore[attr-defined]
    run = api.store.create_run(NewRun(project="p", status=RunStatus.RUNNING, kind=RunKind.JUPYTERLAB))
    gone = free_port()  # nothing listens there: the JupyterLab went without its run knowing yet
    directory = run_directory(server.settings.home, run.id)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lab.json").write_text(json.dumps({"url": "x", "token": "t" * 43, "port": gone, "pid": 1,
                                                    "base": f"/lab/{run.id}/"}))
    lab_port = free_port()
    app = lab_app(server, policy, server.lab_access, lab_port)
    with TestClient(app, base_url=f"http://127.0.0.1:{lab_port}") as browser:
        opened = browser.get(f"/lab/{run.id}/?ticket={server.lab_access.ticket(run.id, None)}",
                             follow_redirects=False)
        assert opened.status_code == 303
        answer = browser.get(f"/lab/{run.id}/api/status")
        assert answer.status_code == 502 and "does not answer" in answer.text
        assert answer.headers["content-type"].startswith("text/html")
        # Once the run has ended (here: lost), its sessions are answered 410, after the moment a check lasts.
        api.store.mark_lost(run.id, "its machine went away")
        time.sleep(CHECK_EVERY)
        ended = browser.get(f"/lab/{run.id}/api/status")
        assert ended.status_code == 410 and "has ended" in ended.text
        # And a path that is no JupyterLab's, without a session, says where to get one.
        assert browser.get("/").status_code == 404
        browser.cookies.clear()
        assert "runyard notebook --url" in browser.get(f"/lab/{run.id}/lab").text


@pytest.mark.engines("sqlite")
def test_only_a_ray_runs_own_job_says_where_its_jupyterlab_answers_and_only_from_there(api: Served) -> None:
    """The lab origin proxies to what a node announces: a stranger's token, or an address other than the
    announcer's own, would point it (and its teammates' browsers) at any service the server can reach."""
    from runyard.exec.ray import TOKEN_PREFIX
    from runyard.store.api import NewRun, RunPatch
    from runyard.store.tokens import Tokens
    from runyard.types import RunKind, RunStatus

    on_ray = api.store.create_run(NewRun(project="p", name="lab", status=RunStatus.RUNNING, executor="ray",
                                         kind=RunKind.JUPYTERLAB))
    here = api.store.create_run(NewRun(project="p", name="here", status=RunStatus.RUNNING, executor="local",
                                       kind=RunKind.JUPYTERLAB))
    tokens = Tokens(api.store)
    _, own = tokens.create("writer", f"{TOKEN_PREFIX}{on_ray.number}", project="p")
    _, other_job = tokens.create("writer", f"{TOKEN_PREFIX}{here.number}", project="p")
    _, writer = tokens.create("writer", "alice")
    body = {"host": "127.0.0.1", "port": 8888, "token": "t" * 40}

    def announce(ref: int, secret: str, **changes: object) -> tuple[int, str]:
        answer = api.client.post(f"/api/v1/runs/{ref}/lab/address", json={**body, **changes},
                                headers={"authorization": f"Bearer {secret}"})
        return answer.status_code, answer.json().get("error", "")

    assert announce(on_ray.number, writer)[0] == 403  # a teammate's token, even a writer's
    assert announce(on_ray.number, other_job)[0] == 403  # another run's job
    status, error = announce(on_ray.number, own)  # its own job, but an address it does not come from
    assert status == 400 and "must answer there" in error
    assert announce(here.number, f"{other_job}")[0] == 400  # a JupyterLab on the server's machine is never announced
    assert announce(on_ray.number, own, port=0)[0] in (400, 422)
    api.store.update_run(on_ray.number, RunPatch(status=RunStatus.STOPPED))
    assert announce(on_ray.number, own)[0] == 409
