"""/serve/NAME/ on the lab origin (server/served.py), in process: a LabProxy over a stub server and
policy in front of a tiny upstream standing in for a model server (or a Ray Serve route)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.server.test_lab_origin_attacks import call

from runyard.server import served as served_module
from runyard.server.lab import LabProxy, Refused, Upstream
from runyard.server.lab_access import LabAccess

PATHS: list[str] = []


class Model(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        PATHS.append(self.path)
        self.send_response(200)
        self.send_header("Set-Cookie", "runyard_session=planted; Path=/")  # the run's code, setting cookies
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def model() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), Model)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_port
    finally:
        httpd.shutdown()


def app(monkeypatch: pytest.MonkeyPatch, found: Any, auth: bool) -> LabProxy:
    policy = SimpleNamespace(host_allowed=lambda host, port=None: True, auth_required=lambda: auth,
                             authenticate=lambda secret: None)
    server = SimpleNamespace(limits=SimpleNamespace(max_upload=1 << 20))
    monkeypatch.setattr(served_module, "serving", found)
    return LabProxy(server, policy, LabAccess(), 8766)  # type: ignore[arg-type]


def test_a_request_reaches_the_model_under_its_route_and_no_cookie_of_it_comes_back(
        model: int, monkeypatch: pytest.MonkeyPatch) -> None:
    run = SimpleNamespace(id="R", number=3, project="default")
    proxy = app(monkeypatch, lambda _server, _name: (run, Upstream(model, "", "127.0.0.2", "/digits")), auth=False)
    sent = call(proxy, "/serve/digits/openapi.json", query=b"x=1")
    assert sent[0]["status"] == 200
    assert PATHS[-1] == "/digits/openapi.json?x=1"  # a Ray Serve application's route kept
    assert not [v for k, v in sent[0]["headers"] if k == b"set-cookie"]  # cookies know no port: none passed


def test_without_a_credential_the_name_is_never_looked_up_and_the_answer_is_json(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def looked_up(_server: Any, _name: str) -> Any:
        raise AssertionError("a stranger's request must not reach the lookup")

    proxy = app(monkeypatch, looked_up, auth=True)
    sent = call(proxy, "/serve/digits/predict")
    assert sent[0]["status"] == 401
    assert (b"www-authenticate", b"Bearer") in sent[0]["headers"]
    assert "needs a token" in json.loads(sent[1]["body"])["error"]
    forged = call(proxy, "/serve/digits/predict", headers=[(b"authorization", b"Bearer nope")])
    assert forged[0]["status"] == 401 and "unknown, expired or revoked" in json.loads(forged[1]["body"])["error"]


def test_a_model_that_went_away_is_a_502_that_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        closed = s.getsockname()[1]
    run = SimpleNamespace(id="R", number=3, project="default")
    proxy = app(monkeypatch, lambda _server, _name: (run, Upstream(closed, "", "127.0.0.2")), auth=False)
    sent = call(proxy, "/serve/digits/ready")
    assert sent[0]["status"] == 502 and "model server does not answer" in json.loads(sent[1]["body"])["error"]


def test_names_that_are_not_served_names_are_not_model_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(_server: Any, _name: str) -> Any:
        raise Refused(404, "nothing is served as that")

    proxy = app(monkeypatch, refused, auth=False)
    for path in ("/serve/Digits/", "/serve/-x/", "/serve/a_b/", "/serve/"):
        assert call(proxy, path)[0]["status"] == 404
    assert call(proxy, "/serve/digits")[0]["status"] == 303  # its path is /serve/digits/


def test_a_model_stopped_a_moment_ago_is_said_to_be_gone_not_to_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which run serves a name is trusted for a moment: a request in that moment after a stop finds
    nobody on the port, and the name is asked after again, so the answer is 404, not 502."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        closed = s.getsockname()[1]
    run = SimpleNamespace(id="R", number=3, project="default")
    answers: list[Any] = [(run, Upstream(closed, "", "127.0.0.2"))]

    def serving(_server: Any, _name: str) -> Any:
        if answers:
            return answers.pop()
        raise Refused(404, "nothing is served as 'digits'")

    proxy = app(monkeypatch, serving, auth=False)
    sent = call(proxy, "/serve/digits/ready")
    assert sent[0]["status"] == 404 and "nothing is served" in json.loads(sent[1]["body"])["error"]


@pytest.mark.parametrize("raw", [b"/serve/a/../b/predict", b"/serve/a/./predict", b"/serve/a%62/predict",
                                 b"/serve/a/%2e%2e/b/predict"])
def test_a_path_that_leads_out_of_its_models_name_is_refused_before_it_is_passed_on(
        raw: bytes, model: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ray Serve proxy serves every application: /serve/a/../b/ checked for a must never reach b."""
    from urllib.parse import unquote

    run = SimpleNamespace(id="R", number=3, project="default")
    proxy = app(monkeypatch, lambda _server, _name: (run, Upstream(model, "", "127.0.0.2", "/a")), auth=False)
    before = len(PATHS)
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "GET", "path": unquote(raw.decode()), "raw_path": raw, "query_string": b"",
             "scheme": "http", "headers": [(b"host", b"127.0.0.1:8766")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(proxy(scope, receive, send))
    assert sent[0]["status"] in (400, 404) and len(PATHS) == before  # nothing reached any model


def test_a_made_up_cookie_or_ticket_learns_nothing_of_what_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    def looked_up(_server: Any, _name: str) -> Any:
        raise AssertionError("a stranger's request must not reach the lookup")

    proxy = app(monkeypatch, looked_up, auth=True)
    assert call(proxy, "/serve/digits/", headers=[(b"cookie", b"runyard_lab=made-up")])[0]["status"] == 401
    assert call(proxy, "/serve/digits/", query=b"ticket=made-up")[0]["status"] == 401
