"""The lab origin (server/lab.py) against what a run's own code, an announced fake or a teammate's
script may try: in process, a LabProxy over a stub server and policy, in front of a tiny upstream
standing in for JupyterLab (or whatever a node says is one). Found by a review that attacked it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from runyard.server import lab as lab_module
from runyard.server.lab import LabProxy, Upstream
from runyard.server.lab_access import LabAccess

RUN = "01J" + "A" * 23
LAB_PORT = 8766
SEEN: list[dict[str, str]] = []


class Upstream_(BaseHTTPRequestHandler):
    """A 'JupyterLab' that answers what the run's own code (or an announced node) may answer."""

    def do_GET(self) -> None:
        SEEN.append({k.lower(): v for k, v in self.headers.items()})
        self.send_response(302 if self.path.endswith(("/go", "/away")) else 200)
        # A JupyterLab extension (the run's own code) or an announced fake lab sets cookies for the
        # whole host: cookies know no port, so these reach the dashboard's origin too.
        self.send_header("Set-Cookie", "runyard_session=attacker; Path=/api/v1")
        self.send_header("Set-Cookie", f"runyard_lab=fixed; Path=/lab/{'01J' + 'B' * 23}/")
        self.send_header("Set-Cookie", "_xsrf=2|abc; HttpOnly; Path=/; Domain=127.0.0.1")
        if self.path.endswith("/go"):
            self.send_header("Location", f"http://127.0.0.2:{self.server.server_port}/lab/{RUN}/tree")
        if self.path.endswith("/away"):
            self.send_header("Location", "https://evil.example/phish")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), Upstream_)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()


def proxy(port: int, monkeypatch: pytest.MonkeyPatch) -> tuple[LabProxy, LabAccess]:
    access = LabAccess()
    policy = SimpleNamespace(host_allowed=lambda host, port=None: True, auth_required=lambda: False,
                             tokens=SimpleNamespace(get=lambda _id: SimpleNamespace(active=True)))
    server = SimpleNamespace(limits=SimpleNamespace(max_upload=1 << 20), lab_access=access)
    monkeypatch.setattr(lab_module, "upstream_of", lambda _server, _run: Upstream(port, "t" * 32, "127.0.0.2"))
    return LabProxy(server, policy, access, LAB_PORT), access  # type: ignore[arg-type]


def call(app: LabProxy, path: str, query: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> list[
        dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": query,
             "scheme": "http", "headers": [(b"host", b"127.0.0.1:8766"), *(headers or [])]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


def session_for(access: LabAccess) -> str:
    made = access.redeem(access.ticket(RUN, None), RUN)
    assert made is not None
    return made[0]


def test_only_jupyters_own_cookie_comes_back_and_only_for_the_runs_path(
        upstream: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cookies know no port: a runyard_session set by a run's server extension would reach the dashboard
    (first, for its longer path), and a runyard_lab another run's JupyterLab."""
    app, access = proxy(upstream, monkeypatch)
    cookie = session_for(access)
    sent = call(app, f"/lab/{RUN}/api/status", headers=[(b"cookie", f"runyard_lab={cookie}".encode())])
    start = sent[0]
    cookies = [v.decode() for k, v in start["headers"] if k == b"set-cookie"]
    assert start["status"] == 200
    assert cookies == [f"_xsrf=2|abc; HttpOnly; Path=/lab/{RUN}/"]


def test_a_redirect_names_no_node_and_no_other_site(upstream: int, monkeypatch: pytest.MonkeyPatch) -> None:
    app, access = proxy(upstream, monkeypatch)
    cookie = session_for(access)
    jar = [(b"cookie", f"runyard_lab={cookie}".encode())]
    node = dict(call(app, f"/lab/{RUN}/go", headers=jar)[0]["headers"])[b"location"].decode()
    assert node == f"/lab/{RUN}/tree"  # the node's own address: a path of the lab origin
    elsewhere = dict(call(app, f"/lab/{RUN}/away", headers=jar)[0]["headers"])[b"location"].decode()
    assert elsewhere == "/"


def test_a_query_string_that_is_not_utf8_is_a_refusal_not_a_crash(
        upstream: int, monkeypatch: pytest.MonkeyPatch) -> None:
    app, _ = proxy(upstream, monkeypatch)
    sent = call(app, f"/lab/{RUN}/", query=b"ticket=\xff")
    assert sent[0]["status"] == 401


def test_no_credential_and_no_forwarding_header_reaches_jupyterlab(
        upstream: int, monkeypatch: pytest.MonkeyPatch) -> None:
    app, access = proxy(upstream, monkeypatch)
    cookie = session_for(access)
    SEEN.clear()
    call(app, f"/lab/{RUN}/api/status", headers=[
        (b"cookie", f"runyard_session=dash; runyard_lab={cookie}; _xsrf=x".encode()),
        (b"authorization", b"Bearer ry_secret"), (b"x-forwarded-for", b"1.2.3.4"), (b"forwarded", b"for=1.2.3.4"),
        (b"connection", b"keep-alive, x-hop"), (b"x-hop", b"this hop's"), (b"x-kept", b"end to end")])
    seen = SEEN[-1]
    assert seen["cookie"] == "_xsrf=x" and seen["authorization"] == "token " + "t" * 32
    assert "x-forwarded-for" not in seen and "forwarded" not in seen
    assert "x-hop" not in seen and seen["x-kept"] == "end to end"  # named by Connection: this hop's only


def test_a_token_holds_a_bounded_number_of_sessions_and_tickets() -> None:
    """A script opening links in a loop fills no memory: each token keeps its newest 64."""
    from runyard.server.lab_access import MOST_PER_TOKEN

    access = LabAccess()
    first = session_for(access)
    for _ in range(3 * MOST_PER_TOKEN):
        session_for(access)
    unused = [access.ticket(RUN, None) for _ in range(3 * MOST_PER_TOKEN)]
    assert len(access._sessions) == MOST_PER_TOKEN and len(access._tickets) == MOST_PER_TOKEN
    assert access.session(first, RUN) is None  # the oldest went first
    assert access.redeem(unused[-1], RUN) is not None and access.redeem(unused[0], RUN) is None
    other = access.redeem(access.ticket(RUN, 7), RUN)  # another token's are its own
    assert other is not None and access.session(other[0], RUN) is not None


def test_lapsed_sessions_are_forgotten() -> None:
    now = [0.0]
    access = LabAccess(clock=lambda: now[0])
    old = session_for(access)
    now[0] += 8 * 86_400
    session_for(access)
    assert old not in access._sessions and len(access._sessions) == 1


@pytest.mark.engines("sqlite")
def test_a_node_address_is_taken_from_the_connection_not_a_header_and_the_first_holds(tmp_path: Any) -> None:
    """uvicorn trusts X-Forwarded-For from 127.0.0.1 by default: any process on the server's machine
    with a Ray lab run's token could otherwise name any address (the cloud's metadata service, say),
    and anyone with it could move a teammate's JupyterLab to a page of their own."""
    import httpx
    from tests.unit.server.conftest import LiveServer, home_env

    from runyard.config import resolve
    from runyard.exec.ray import TOKEN_PREFIX
    from runyard.store.api import NewRun
    from runyard.store.home import open_store
    from runyard.store.tokens import Tokens
    from runyard.types import RunKind, RunStatus

    db = f"sqlite:///{tmp_path / 'runyard.db'}"
    home = tmp_path / "server-home"
    opened = open_store(resolve(environ=home_env(home, db), cwd=tmp_path))
    try:
        run = opened.store.create_run(NewRun(project="p", name="lab", status=RunStatus.RUNNING, executor="ray",
                                             kind=RunKind.JUPYTERLAB))
        _, job = Tokens(opened.store).create("writer", f"{TOKEN_PREFIX}{run.number}", project="p")
    finally:
        opened.close()
    server = LiveServer(home, db, insecure_local=False)
    server.start()
    try:
        def announce(host: str, port: int = 80, claimed: str | None = None) -> httpx.Response:
            return httpx.post(f"{server.url}/api/v1/runs/{run.number}/lab/address", timeout=10,
                              json={"host": host, "port": port, "token": "t" * 40},
                              headers={"authorization": f"Bearer {job}", "x-forwarded-for": claimed or host})

        said = announce("169.254.169.254")
        assert said.status_code == 400 and "from 127.0.0.1" in said.text, said.text
        assert announce("127.0.0.1", 8888).status_code == 200  # where it is connected from
        assert announce("127.0.0.1", 8888).status_code == 200  # renewed
        moved = announce("127.0.0.1", 9999)
        assert moved.status_code == 409 and "lapses" in moved.text
    finally:
        server.kill()


@pytest.mark.engines("sqlite")
def test_a_node_reaching_a_dual_stack_server_over_ipv4_is_taken_at_its_own_address(api: Any) -> None:
    from fastapi.testclient import TestClient

    from runyard.exec.ray import TOKEN_PREFIX
    from runyard.store.api import NewRun
    from runyard.store.tokens import Tokens
    from runyard.types import RunKind, RunStatus

    run = api.store.create_run(NewRun(project="p", name="lab", status=RunStatus.RUNNING, executor="ray",
                                      kind=RunKind.JUPYTERLAB))
    _, job = Tokens(api.store).create("writer", f"{TOKEN_PREFIX}{run.number}", project="p")
    with TestClient(api.client.app, base_url="http://127.0.0.1:8765", client=("::ffff:10.0.0.5", 5000),
                    raise_server_exceptions=False) as node:
        said = node.post(f"/api/v1/runs/{run.number}/lab/address",
                         json={"host": "10.0.0.5", "port": 8888, "token": "t" * 40},
                         headers={"authorization": f"Bearer {job}"})
    assert said.status_code == 200, said.text


@pytest.mark.engines("sqlite")
def test_an_announcement_is_held_to_the_apis_caps_on_json_bodies(api: Any) -> None:
    from runyard.server.security import MAX_JSON_BODY

    big = b'{"host": "' + b"x" * (4 * MAX_JSON_BODY) + b'", "port": 1, "token": "' + b"t" * 40 + b'"}'
    said = api.client.post("/api/v1/runs/1/lab/address", content=big, headers={"content-type": "application/json"})
    assert said.status_code == 413, said.text[:300]
    many = b"[" + b"0," * 300_000 + b"0]"
    said = api.client.post("/api/v1/runs/1/lab/address", content=many, headers={"content-type": "application/json"})
    assert said.status_code == 413, said.text[:300]


def test_a_cookie_planted_for_a_longer_path_is_refused_not_obeyed(
        upstream: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook's script on the lab origin can set a cookie for this host (any port) under a longer
    path, which the browser then sends first: neither value is trusted."""
    app, access = proxy(upstream, monkeypatch)
    mine, planted = session_for(access), session_for(access)
    sent = call(app, f"/lab/{RUN}/api/status",
                headers=[(b"cookie", f"runyard_lab={planted}; runyard_lab={mine}".encode())])
    assert sent[0]["status"] == 400
    assert b"several runyard_lab cookies" in b"".join(m.get("body", b"") for m in sent)


@pytest.mark.engines("sqlite")
def test_the_dashboard_refuses_a_second_session_cookie_planted_beside_its_own(api: Any) -> None:
    from runyard.store.tokens import Tokens

    _, secret = Tokens(api.store).create("reader")
    code = api.client.post("/api/v1/login-codes", json={}, headers={"authorization": f"Bearer {secret}"}).json()
    login = api.client.get(code["path"], follow_redirects=False)
    mine = login.cookies["runyard_session"]
    api.client.cookies.clear()
    ok = api.client.get("/api/v1/runs", headers={"cookie": f"runyard_session={mine}"})
    assert ok.status_code == 200
    planted = api.client.get("/api/v1/runs", headers={"cookie": f"runyard_session=theirs; runyard_session={mine}"})
    assert planted.status_code == 400 and "several runyard_session cookies" in planted.json()["error"]


def test_a_websocket_to_a_jupyterlab_that_does_not_answer_closes_as_a_failure_not_a_refusal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1011 (the far end failed: try again) rather than 1008 (refused: do not), and over HTTP the same
    case is a 502: one Refused carries both, each in its own terms."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        closed = s.getsockname()[1]  # nobody listens here once the socket is gone
    app, access = proxy(closed, monkeypatch)
    cookie = session_for(access)
    sent: list[dict[str, Any]] = []
    scope = {"type": "websocket", "path": f"/lab/{RUN}/api/kernels/k/channels", "raw_path": b"", "query_string": b"",
             "scheme": "ws", "headers": [(b"host", b"127.0.0.1:8766"), (b"cookie", f"runyard_lab={cookie}".encode())]}
    messages = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    assert sent[-1]["type"] == "websocket.close" and sent[-1]["code"] == 1011, sent
    over_http = call(app, f"/lab/{RUN}/api/status", headers=[(b"cookie", f"runyard_lab={cookie}".encode())])
    assert over_http[0]["status"] == 502
