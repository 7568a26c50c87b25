"""The tracking server's security acceptance points, on both engines.

1. Artifact paths: a corpus of escapes is refused (400/404) on download and upload, a symlink inside
   the store never leads out of it, and nothing outside the store changes.
2. Roles and tokens: reader < writer < admin, revocation, project scoping, secrets kept only hashed.
3. Route inventory: every mounted route declares a role, and the gate enforces it.
4. Browser-side attacks: forged bodies (415), DNS rebinding (Host, 400), cross-origin (403), and
   error bodies that are JSON and never repeat request headers.
5. A real ``runyard server`` process: off loopback it needs a token to start and on every request.
6. The server never unpickles.

Path-escape requests go to the ASGI app with the exact request target (decoded once, as uvicorn
does): httpx would collapse ``../`` and the test client would decode twice. The real-process test
sends the same corpus over a socket, byte for byte.
"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import msgpack
import numpy as np
import pytest
import sqlalchemy as sa
from tests.unit.server.conftest import LiveServer, Served, free_port, home_env, migrate_postgres

from runyard.alerts.rules import check
from runyard.config import resolve
from runyard.server import ui
from runyard.server.security import RANK, route_role
from runyard.store.api import AlertEvent, NewRun
from runyard.store.engine import create_engine
from runyard.store.home import open_store
from runyard.store.schema import api_tokens
from runyard.store.series import Points
from runyard.store.tokens import Tokens
from runyard.types import RunStatus

HOST = "127.0.0.1:8765"
SRC = Path(__file__).resolve().parents[3] / "src" / "runyard"
SENTINEL = b"RUNYARD-SENTINEL-" + uuid.uuid4().hex.encode()
OCTETS = {"content-type": "application/octet-stream"}
JSON = {"content-type": "application/json"}

#: Artifact paths as they go on the wire after ``/api/v1/runs/{n}/artifacts/``. Each must be refused.
ESCAPES = [
    # plain dot-dot, at every depth up to (and past) the directory outside the store
    "../outside/victim.txt",
    "../../outside/victim.txt",
    "../../../outside/victim.txt",
    "../../../../outside/victim.txt",
    "../../../../../outside/victim.txt",
    "../../../../../../../../../../etc/passwd",
    "a/../../outside/victim.txt",
    "./a.txt",
    "..",
    # encoded separators and dots, once
    "..%2f..%2f..%2f..%2foutside%2fvictim.txt",
    "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2foutside%2fvictim.txt",
    "%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/victim.txt",
    ".%2e/.%2e/.%2e/etc/passwd",
    "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
    # encoded twice (the server must decode once, and refuse what still looks encoded)
    "%252e%252e%252f%252e%252e%252f%252e%252e%252f%252e%252e%252foutside%252fvictim.txt",
    "..%252f..%252f..%252f..%252foutside%252fvictim.txt",
    "%25252e%25252e%25252fetc%25252fpasswd",
    # backslashes
    "..\\..\\..\\..\\outside\\victim.txt",
    "..%5c..%5c..%5c..%5coutside%5cvictim.txt",
    "a\\..\\..\\x",
    # absolute paths, drives, schemes
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "/proc/self/root/etc/passwd",
    "//proc/self/root/etc/passwd",
    "C:/Windows/win.ini",
    "C:%5cWindows%5cwin.ini",
    "c:",
    "file:///etc/passwd",
    "file:%2f%2f%2fetc%2fpasswd",
    "file:/etc/passwd",
    # ? # ; smuggling
    "a%3F/../../x",
    "a%3f/..%2f..%2fx",
    "a%23/../x",
    "a#/../../outside/victim.txt",
    "..;/x",
    "..;/..;/outside/victim.txt",
    "a;/../../x",
    # NUL and control characters
    "%00",
    "..%00/x",
    "a.txt%00.png",
    "a.txt%00",
    "a%0a..%2fx",
    # empty and degenerate segments
    "",
    "a//b",
    "dir/a.txt/",
    "dir/./a.txt",
]
#: Whole request targets that smuggle an escape through the run segment instead.
REF_ESCAPES = [
    "/api/v1/runs/..%2f..%2f..%2f/artifacts/a.txt",
    "/api/v1/runs/%2e%2e/artifacts/../../outside/victim.txt",
    "/api/v1/runs/1%2f..%2f..%2f..%2f/artifacts/victim.txt",
    "/api/v1/runs/1/artifacts/../../../../../../outside/victim.txt",
    "/api/v1/runs/1/../../../../../../etc/passwd",
]


# -- helpers ---------------------------------------------------------------------------------------


@dataclass
class Raw:
    """A response from the ASGI app, and whether the app raised (after or instead of answering)."""

    status: int
    headers: dict[str, str]
    body: bytes
    raised: BaseException | None = None


def asgi(api: Served, method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"") -> Raw:
    """One request with exactly this request target, decoded once as uvicorn does."""
    raw_target = target.encode("latin-1")
    raw_path, _, query = raw_target.partition(b"?")
    sent = {"host": HOST, **(headers or {})}
    if body or method in ("POST", "PUT", "PATCH"):
        sent["content-length"] = str(len(body))
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http", "root_path": "", "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path, "query_string": query, "client": ("127.0.0.1", 50123), "server": ("127.0.0.1", 8765),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in sent.items()], "state": {},
    }

    async def call() -> Raw:
        done = anyio.Event()
        got = Raw(0, {}, b"")
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                got.status = message["status"]
                got.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                got.body += message.get("body", b"")
                if not message.get("more_body"):
                    done.set()

        with anyio.fail_after(10):
            try:
                await api.client.app(scope, receive, send)
            except Exception as e:  # noqa: BLE001 - recorded: a crash after the headers is a finding too
                got.raised = e
        return got

    portal = api.client.portal
    assert portal is not None
    return portal.call(call)


def seed(api: Served, project: str = "p", name: str = "r") -> int:
    return api.store.create_run(NewRun(project=project, name=name, status=RunStatus.RUNNING)).number


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def no_token_cache(api: Served) -> None:
    api.client.app.state.policy.tokens_check_interval = 0


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every path under root (symlinks not followed): kind, bytes or target, mode, mtime."""
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            path = Path(dirpath, name) if name else Path(dirpath)
            st = path.lstat()
            if path.is_symlink():
                content: Any = os.readlink(path)
            elif path.is_file():
                content = path.read_bytes()
            else:
                content = None
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, content)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the server's home (outside its artifact store) holding a few files."""
    root = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (root / "victim.txt").write_bytes(b"victim " + SENTINEL)
    (root / "secret.txt").write_bytes(SENTINEL)
    (root / "sub" / "inner.bin").write_bytes(bytes(range(256)) + SENTINEL)
    return root


def assert_json_error(status: int, content_type: str | None, body: bytes) -> dict[str, Any]:
    assert (content_type or "").startswith("application/json"), (status, content_type, body[:200])
    data = json.loads(body)
    assert isinstance(data, dict) and isinstance(data.get("error"), str) and data.get("status") == status, data
    return data


def assert_refused(r: Raw, what: str) -> None:
    assert r.status in (400, 404), (what, r.status, r.body[:300], r.raised)
    assert r.raised is None, (what, r.raised)
    assert SENTINEL not in r.body and b"root:" not in r.body, what
    assert_json_error(r.status, r.headers.get("content-type"), r.body)


# -- 1. artifact paths -----------------------------------------------------------------------------


def test_artifact_positive_control(api: Served) -> None:
    number = seed(api)
    data = b"0123456789"
    put = api.client.put(f"/api/v1/runs/{number}/artifacts/dir/a.txt", content=data, headers=OCTETS)
    assert put.status_code == 200, put.text
    assert put.json()["path"] == "dir/a.txt" and put.json()["sha256"] == hashlib.sha256(data).hexdigest()
    got = api.client.get(f"/api/v1/runs/{number}/artifacts/dir/a.txt")
    assert got.status_code == 200 and got.content == data
    assert got.headers["content-disposition"].startswith("attachment")
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-type"].startswith("application/octet-stream")
    part = api.client.get(f"/api/v1/runs/{number}/artifacts/dir/a.txt", headers={"range": "bytes=2-5"})
    assert part.status_code == 206 and part.content == b"2345"
    assert part.headers["content-range"] == "bytes 2-5/10" and part.headers["content-length"] == "4"
    # the raw-request helper reaches the same route and sees the same bytes
    raw = asgi(api, "GET", f"/api/v1/runs/{number}/artifacts/dir/a.txt")
    assert raw.status == 200 and raw.body == data and raw.raised is None
    raw_put = asgi(api, "PUT", f"/api/v1/runs/{number}/artifacts/dir/b.txt", OCTETS, b"bee")
    assert raw_put.status == 200, raw_put.body
    assert api.client.get(f"/api/v1/runs/{number}/artifacts/dir/b.txt").content == b"bee"


def test_artifact_path_escapes_are_refused_and_nothing_outside_changes(api: Served, outside: Path) -> None:
    number = seed(api)
    assert api.client.put(f"/api/v1/runs/{number}/artifacts/a.txt", content=b"legit", headers=OCTETS).status_code == 200
    store_root = Path(api.opened.artifacts.root).resolve()
    assert not outside.resolve().is_relative_to(store_root)
    before = snapshot(outside)
    listed_before = api.client.get(f"/api/v1/runs/{number}/artifacts").json()

    for escape in ESCAPES:
        target = f"/api/v1/runs/{number}/artifacts/{escape}"
        assert_refused(asgi(api, "GET", target), f"GET {target}")
        assert_refused(asgi(api, "GET", target, {"range": "bytes=0-10"}), f"GET {target} (range)")
        assert_refused(asgi(api, "PUT", target, OCTETS, b"PWNED " + SENTINEL), f"PUT {target}")
    for target in REF_ESCAPES:
        assert_refused(asgi(api, "GET", target), f"GET {target}")
        assert_refused(asgi(api, "PUT", target, OCTETS, b"PWNED " + SENTINEL), f"PUT {target}")

    assert snapshot(outside) == before
    assert api.client.get(f"/api/v1/runs/{number}/artifacts").json() == listed_before
    assert api.client.get(f"/api/v1/runs/{number}/artifacts/a.txt").content == b"legit"


def _linked_object(api: Served, number: int, path: str, target: Path) -> str:
    """Index ``path`` as content whose object in the store is a symlink to ``target``."""
    data = target.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    objects = Path(api.opened.artifacts.root) / "objects"
    (objects / sha[:2]).mkdir(parents=True, exist_ok=True)
    (objects / sha[:2] / sha[2:]).symlink_to(target)
    api.store.record_artifact(number, path, len(data), sha, f"sha256:{sha}")
    return sha


def test_symlinked_object_never_serves_what_it_points_to(api: Served, outside: Path) -> None:
    number = seed(api)
    _linked_object(api, number, "linked.txt", outside / "secret.txt")
    before = snapshot(outside)
    for headers in ({}, {"range": "bytes=0-5"}, {"range": "bytes=-5"}):
        r = asgi(api, "GET", f"/api/v1/runs/{number}/artifacts/linked.txt", headers)
        assert SENTINEL[:5] not in r.body and SENTINEL[-5:] not in r.body
        # refused before any byte is promised: not a 200 whose body then breaks off
        assert r.status in (400, 404), (r.status, r.headers, r.body[:200], r.raised)
    assert snapshot(outside) == before


def test_symlinked_shard_directory_is_neither_read_nor_written(api: Served, outside: Path) -> None:
    number = seed(api)
    data = b"goes through a symlinked shard " + uuid.uuid4().hex.encode()
    sha = hashlib.sha256(data).hexdigest()
    objects = Path(api.opened.artifacts.root) / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    (objects / sha[:2]).symlink_to(outside / "sub", target_is_directory=True)
    before = snapshot(outside)
    up = api.client.put(f"/api/v1/runs/{number}/artifacts/shard.txt", content=data, headers=OCTETS)
    assert up.status_code in (400, 403, 404, 500), up.text
    assert snapshot(outside) == before
    # an index entry forged to point there is not served either
    (outside / "sub" / sha[2:]).write_bytes(SENTINEL)
    before = snapshot(outside)
    api.store.record_artifact(number, "shard.txt", len(SENTINEL), sha, f"sha256:{sha}")
    r = asgi(api, "GET", f"/api/v1/runs/{number}/artifacts/shard.txt")
    assert SENTINEL not in r.body
    assert r.status in (400, 404), (r.status, r.body[:200], r.raised)
    assert snapshot(outside) == before


# -- 2. roles and tokens ---------------------------------------------------------------------------


def test_roles_reader_writer_admin_and_revocation(api: Served) -> None:
    number = seed(api)
    tokens = Tokens(api.store)
    _, reader = tokens.create("reader", "reader")
    _, writer = tokens.create("writer", "writer")
    admin_info, admin = tokens.create("admin", "admin")
    no_token_cache(api)
    c = api.client
    run_url = f"/api/v1/runs/{number}"

    for headers in ({}, bearer("ry_00000000_" + "x" * 43), {"authorization": f"Basic {admin}"},
                    {"authorization": "Bearer "}, {"authorization": admin}):
        r = c.get("/api/v1/runs", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (headers, r.text)

    # reader: reads, changes nothing
    assert c.get("/api/v1/runs", headers=bearer(reader)).status_code == 200
    assert c.get(run_url, headers=bearer(reader)).json()["name"] == "r"
    assert c.patch(run_url, json={"name": "by-reader"}, headers=bearer(reader)).status_code == 403
    ingest = msgpack.packb({"run_id": "a" * 32, "writer": "w", "items": []})
    assert c.post("/api/v1/ingest", content=ingest, headers={**bearer(reader), "content-type": "application/msgpack"}
                  ).status_code == 403
    assert c.put(f"{run_url}/artifacts/x.txt", content=b"x", headers={**bearer(reader), **OCTETS}).status_code == 403
    assert c.get(f"{run_url}/artifacts", headers=bearer(reader)).json() == []
    assert c.get(run_url, headers=bearer(reader)).json()["name"] == "r"

    # writer: changes runs, not access
    assert c.patch(run_url, json={"name": "by-writer"}, headers=bearer(writer)).json()["name"] == "by-writer"
    assert c.get("/api/v1/tokens", headers=bearer(writer)).status_code == 403
    assert c.post("/api/v1/tokens", json={"role": "admin"}, headers=bearer(writer)).status_code == 403
    assert c.delete(f"/api/v1/tokens/{admin_info.id}", headers={**bearer(writer), "content-type": "application/json"}
                    ).status_code == 403
    assert len(tokens.list()) == 3

    # admin: creates, lists, revokes
    made = c.post("/api/v1/tokens", json={"role": "reader", "name": "made-by-api"}, headers=bearer(admin))
    assert made.status_code == 200, made.text
    new_secret, new_id = made.json()["token"], made.json()["id"]
    assert c.get("/api/v1/runs", headers=bearer(new_secret)).status_code == 200
    listed = c.get("/api/v1/tokens", headers=bearer(admin))
    assert listed.status_code == 200
    assert {t["name"] for t in listed.json()} == {"reader", "writer", "admin", "made-by-api"}
    for secret in (reader, writer, admin, new_secret):
        assert secret not in listed.text and secret.split("_", 2)[2] not in listed.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in listed.text
    assert all("token" not in t and "token_sha256" not in t for t in listed.json())

    gone = c.delete(f"/api/v1/tokens/{new_id}", headers={**bearer(admin), "content-type": "application/json"})
    assert gone.status_code == 200 and gone.json()["revoked_at"] is not None
    assert c.get("/api/v1/runs", headers=bearer(new_secret)).status_code == 401
    tokens.revoke("reader")
    assert c.get("/api/v1/runs", headers=bearer(reader)).status_code == 401
    assert c.get(run_url, headers=bearer(reader)).status_code == 401
    assert {t["name"] for t in c.get("/api/v1/tokens", headers=bearer(admin)).json()} == {"writer", "admin"}
    # revoking every token does not reopen the server
    tokens.revoke("writer")
    tokens.revoke("admin")
    assert c.get("/api/v1/runs").status_code == 401
    assert c.get("/api/v1/runs", headers=bearer(admin)).status_code == 401


def test_project_token_sees_only_its_project(api: Served) -> None:
    mine, theirs = seed(api, "p", "mine"), seed(api, "q", "theirs")
    api.store.append_points(theirs, {"loss": Points.of(np.arange(3), np.arange(3) * 1.0, np.ones(3))})
    tokens = Tokens(api.store)
    _, reader = tokens.create("reader", "p-reader", project="p")
    _, writer = tokens.create("writer", "p-writer", project="p")
    no_token_cache(api)
    c = api.client
    h = bearer(reader)

    listed = c.get("/api/v1/runs", headers=h).json()["items"]
    assert [r["number"] for r in listed] == [mine]
    assert c.get("/api/v1/runs", params={"project": "q"}, headers=h).json()["items"] == []
    assert [p["name"] for p in c.get("/api/v1/projects", headers=h).json()] == ["p"]
    assert c.get(f"/api/v1/runs/{mine}", headers=h).status_code == 200
    for ref in (str(theirs), "theirs"):
        for suffix in ("", "/metrics", "/metrics/loss", "/points/loss", "/logs", "/artifacts", "/children", "/inputs"):
            r = c.get(f"/api/v1/runs/{ref}{suffix}", headers=h)
            assert r.status_code == 404, (ref, suffix, r.status_code, r.text)
            assert "theirs" not in r.text or ref == "theirs"
    assert c.get("/api/v1/events", params={"run": str(theirs)}, headers=h).status_code == 404
    assert c.get("/api/v1/events", params={"project": "q"}, headers=h).status_code == 404

    w = bearer(writer)
    assert c.patch(f"/api/v1/runs/{theirs}", json={"name": "hijacked"}, headers=w).status_code == 404
    assert c.put(f"/api/v1/runs/{theirs}/artifacts/x.txt", content=b"x", headers={**w, **OCTETS}).status_code == 404
    assert c.post(f"/api/v1/runs/{theirs}/lost", json={"message": "no"}, headers=w).status_code == 404
    assert api.store.get_run(theirs).name == "theirs" and api.store.list_artifacts(theirs) == []
    assert c.patch(f"/api/v1/runs/{mine}", json={"name": "renamed"}, headers=w).status_code == 200


def test_a_project_token_s_alert_rules_stay_in_its_project(api: Served) -> None:
    mine, theirs = seed(api, "p", "mine"), seed(api, "q", "theirs")
    _, writer = Tokens(api.store).create("writer", "p-writer", project="p")
    no_token_cache(api)
    c, w = api.client, bearer(writer)
    nan = {"name": "loss-nan", "when": "nan", "metric": "loss"}
    made = c.post("/api/v1/alert-rules", json={"rule": nan}, headers=w)
    assert made.status_code == 201 and made.json()["project"] == "p"  # not every run on the server
    assert c.post("/api/v1/alert-rules", json={"rule": nan, "project": "q"}, headers=w).status_code == 403
    assert c.post("/api/v1/alert-rules", json={"rule": nan, "run": str(theirs)}, headers=w).status_code == 404
    bad = c.post("/api/v1/alert-rules", json={"rule": {"name": "x", "when": "drop", "metric": "acc"}}, headers=w)
    assert bad.status_code == 400 and "needs by" in bad.json()["error"]
    other = api.store.add_alert_rule(check(nan, "test", project="q"))
    assert [r["project"] for r in c.get("/api/v1/alert-rules", headers=w).json()] == ["p"]
    assert c.delete(f"/api/v1/alert-rules/{other.id}", headers={**w, **JSON}).status_code == 404
    everyone = api.store.add_alert_rule(check({"name": "any-failure", "when": "failed"}, "test"))
    assert c.delete(f"/api/v1/alert-rules/{everyone.id}", headers={**w, **JSON}).status_code == 403
    assert len(api.store.list_alert_rules()) == 3
    assert c.delete(f"/api/v1/alert-rules/{made.json()['id']}", headers={**w, **JSON}).status_code == 200
    assert len(api.store.list_alert_rules()) == 2
    api.store.add_alert_event(AlertEvent(theirs, "nan", "q's alert", 1.0))
    api.store.add_alert_event(AlertEvent(mine, "nan", "p's alert", 1.0))
    assert c.get("/api/v1/status", headers=w).json() == {"running": 1, "queued": 0, "failed": 0, "alerts": 1}


def test_project_admin_cannot_mint_a_token_beyond_its_project(api: Served) -> None:
    seed(api, "p", "mine")
    theirs = seed(api, "q", "theirs")
    _, admin = Tokens(api.store).create("admin", "p-admin", project="p")
    no_token_cache(api)
    c = api.client
    made = c.post("/api/v1/tokens", json={"role": "admin", "name": "escalated"}, headers=bearer(admin))
    if made.status_code == 200:  # allowed only if the new token is held to the same project
        secret = made.json()["token"]
        assert c.get(f"/api/v1/runs/{theirs}", headers=bearer(secret)).status_code == 404
        assert theirs not in [r["number"] for r in c.get("/api/v1/runs", headers=bearer(secret)).json()["items"]]
    else:
        assert made.status_code in (400, 403), made.text
    other = c.post("/api/v1/tokens", json={"role": "reader", "project": "q"}, headers=bearer(admin))
    assert other.status_code in (400, 403, 404), other.text


def test_token_secrets_are_kept_only_as_sha256(api: Served, db_url: str) -> None:
    tokens = Tokens(api.store)
    secrets = [tokens.create(role, f"t-{role}")[1] for role in ("reader", "writer")]
    _, admin = tokens.create("admin", "t-admin")
    secrets.append(admin)
    no_token_cache(api)
    made = api.client.post("/api/v1/tokens", json={"role": "reader", "name": "api"}, headers=bearer(admin))
    secrets.append(made.json()["token"])
    assert api.client.get("/api/v1/runs", headers=bearer(secrets[0])).status_code == 200  # touches last_used_at
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(sa.select(api_tokens))]
    finally:
        engine.dispose()
    assert len(rows) == len(secrets)
    digests = {hashlib.sha256(s.encode()).hexdigest() for s in secrets}
    assert {r["token_sha256"] for r in rows} == digests
    for row in rows:
        for column, value in row.items():
            for secret in secrets:
                assert value != secret and secret not in str(value), column
                assert secret.split("_", 2)[2] not in str(value), column


# -- 3. route inventory ----------------------------------------------------------------------------


def _routes(api: Served) -> list[tuple[str, str, str | None]]:
    """(method, path template, declared role) of every mounted route."""
    out = []
    for route in api.client.app.router.routes:
        methods = sorted(getattr(route, "methods", None) or ["GET"])
        out += [(m, getattr(route, "path", repr(route)), route_role(route)) for m in methods]
    return out


def _concrete(template: str, number: int) -> str:
    values = {"ref": "1" if template.startswith("/api/v1/tokens") else str(number), "key": "loss", "path": "a.txt",
              "sha256": "0" * 64, "rule_id": "1", "name": "digits", "selector": "latest", "alias": "production"}
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], template)


def test_every_route_declares_a_role(api: Served) -> None:
    routes = _routes(api)
    undeclared = [(m, p) for m, p, role in routes if role not in RANK]
    assert not undeclared, f"routes without a role declaration: {undeclared}"
    paths = {p for _, p, _ in routes}
    for expected in ("/", "/api/openapi.json", "/api/health", "/api/v1/events", "/api/v1/ingest",
                     "/api/v1/tokens", "/api/v1/runs/{ref}/artifacts/{path:path}"):
        assert expected in paths
    # forgetting the declaration fails closed
    api.client.app.add_api_route("/api/v1/undeclared", lambda: {"open": True}, methods=["GET"])
    r = api.client.get("/api/v1/undeclared")
    assert r.status_code == 403 and "open" not in r.text


def test_every_route_enforces_its_role(api: Served) -> None:
    number = seed(api)
    api.store.append_points(number, {"loss": Points.of(np.arange(3), np.arange(3) * 1.0, np.ones(3))})
    api.client.put(f"/api/v1/runs/{number}/artifacts/a.txt", content=b"abc", headers=OCTETS)
    tokens = Tokens(api.store)
    _, reader = tokens.create("reader", "reader")
    _, admin = tokens.create("admin", "admin")
    no_token_cache(api)
    c = api.client
    checked = 0
    public = sorted(template for _, template, role in _routes(api) if role == "public")
    # Only the dashboard's shell and its assets are open, and they hold no data (see server/ui.py); and
    # the two steps before a token is used: a server's proof that it holds one, a browser's login link.
    assert public == sorted([*ui.PAGES, "/assets/{name}", "/api/login", "/api/proof"])
    assert c.get("/api/login", params={"code": "guessed"}).status_code == 401
    assert "set-cookie" not in c.get("/api/login").headers
    shells = set()
    for template in ui.PAGES:
        shell = c.get(template.replace("{rest:path}", str(number)))
        assert shell.status_code == 200 and shell.headers["content-type"].startswith("text/html")
        assert "content-security-policy" in shell.headers
        assert api.store.get_run(number).id.encode() not in shell.content
        shells.add(shell.content)
    assert len(shells) == 1  # the same static page whatever the URL names
    for method, template, role in _routes(api):
        if role == "public":
            continue
        url = _concrete(template, number)
        body = {"content": b"{}", "headers": {"content-type": "application/json"}} if method in (
            "POST", "PUT", "PATCH", "DELETE") else {"headers": {}}
        anonymous = c.request(method, url, content=body.get("content"), headers=body["headers"])
        assert anonymous.status_code == 401, (method, url, anonymous.status_code)
        if template == "/api/v1/events":  # a reader's stream would never end: ask for a run that is not there
            assert role == "reader"
            r = c.get(url, params={"run": "999999"}, headers=bearer(reader))
            assert r.status_code == 404, r.text
            checked += 1
            continue
        as_reader = c.request(method, url, content=body.get("content"), headers={**body["headers"], **bearer(reader)})
        if RANK.get(role or "", 99) > RANK["reader"]:
            assert as_reader.status_code == 403, (method, url, role, as_reader.status_code)
        else:
            assert as_reader.status_code not in (401, 403), (method, url, as_reader.status_code, as_reader.text)
        checked += 1
    assert checked >= 25
    assert c.get("/api/v1/tokens", headers=bearer(admin)).status_code == 200
    assert api.store.get_run(number).status == RunStatus.RUNNING  # no writer route ran for the reader


# -- 4. browser-side attacks -----------------------------------------------------------------------


def test_state_changes_need_a_json_msgpack_or_octet_body(api: Served) -> None:
    number = seed(api)
    # no tokens: the loopback server's single user may do anything, but not through a form or text body
    c = api.client
    requests = [("PATCH", f"/api/v1/runs/{number}", b'{"name": "forged"}'),
                ("PUT", f"/api/v1/runs/{number}/artifacts/forged.txt", b"forged"),
                ("POST", f"/api/v1/runs/{number}/stop", b"{}"),
                ("POST", f"/api/v1/runs/{number}/lost", b'{"message": "forged"}'),
                ("POST", "/api/v1/tokens", b'{"role": "admin"}'),
                ("DELETE", "/api/v1/tokens/1", b""),
                ("POST", "/api/v1/ingest", msgpack.packb({"run_id": "a" * 32, "writer": "w", "items": []})),
                ("PUT", f"/api/v1/blobs/{hashlib.sha256(b'forged').hexdigest()}", b"forged")]
    for content_type in ("text/plain", "text/plain; charset=utf-8", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=xyz", None, "", "application/json-patch+json",
                         "text/plain; application/json"):
        for method, url, body in requests:
            headers = {} if content_type is None else {"content-type": content_type}
            r = c.request(method, url, content=body, headers=headers)
            if content_type is None:
                assert "content-type" not in r.request.headers
            assert r.status_code == 415, (method, url, content_type, r.status_code, r.text)
            assert_json_error(415, r.headers.get("content-type"), r.content)
    run = api.store.get_run(number)
    assert run.name == "r" and run.status == RunStatus.RUNNING and api.store.list_artifacts(number) == []
    assert Tokens(api.store).list() == []
    # the same changes with a proper type go through
    assert c.patch(f"/api/v1/runs/{number}", content=b'{"name": "ok"}',
                   headers={"content-type": "application/json; charset=utf-8"}).status_code == 200


def test_host_header_must_name_the_server(api: Served) -> None:
    number = seed(api)
    c = api.client
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example:8765", "localhost.evil.example:8765",
                 "127.0.0.1:9999", "localhost:9999", "127.0.0.1:80", "127.0.0.1:8765.evil.example",
                 "127.0.0.1:8765@evil.example", "evil.example#127.0.0.1:8765", "0.0.0.0:8765", "10.0.0.1:8765", ""):
        r = c.get("/api/v1/runs", headers={"host": host})
        assert r.status_code == 400, (host, r.status_code)
        assert_json_error(400, r.headers.get("content-type"), r.content)
        r = c.patch(f"/api/v1/runs/{number}", json={"name": "rebound"}, headers={"host": host})
        assert r.status_code == 400, (host, r.status_code)
    assert api.store.get_run(number).name == "r"
    for host in ("127.0.0.1:8765", "localhost:8765", "LOCALHOST:8765", "[::1]:8765"):
        assert c.get("/api/v1/runs", headers={"host": host}).status_code == 200, host


def test_foreign_origins_are_refused(api: Served) -> None:
    number = seed(api)
    c = api.client
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8765.evil.example", "https://127.0.0.1:8765",
                   "http://127.0.0.1:9999", "http://evil.example:8765"):
        h = {"origin": origin}
        for r in (c.get("/api/v1/runs", headers=h),
                  c.patch(f"/api/v1/runs/{number}", json={"name": "cross-site"}, headers=h),
                  c.options(f"/api/v1/runs/{number}", headers={**h, "access-control-request-method": "PATCH"})):
            assert r.status_code == 403, (origin, r.request.method, r.status_code)
            assert "access-control-allow-origin" not in r.headers
            assert_json_error(403, r.headers.get("content-type"), r.content)
    assert api.store.get_run(number).name == "r"
    same = {"origin": "http://127.0.0.1:8765"}
    assert c.get("/api/v1/runs", headers=same).status_code == 200
    changed = c.patch(f"/api/v1/runs/{number}", json={"name": "same-site"}, headers=same)
    assert changed.status_code == 200 and changed.json()["name"] == "same-site"


def _error_requests(number: int, marker: str) -> Iterator[tuple[int, str, str, dict[str, str], bytes | None]]:
    """(expected status, method, url, headers, body) of requests that fail, each carrying the marker."""
    run = f"/api/v1/runs/{number}"
    yield 400, "GET", "/api/v1/runs", {"host": f"{marker}.evil.example:8765"}, None
    yield 403, "GET", "/api/v1/runs", {"origin": f"http://{marker}.example"}, None
    yield 415, "PATCH", run, {"content-type": f"text/{marker}"}, b"{}"
    yield 404, "GET", f"/api/v1/{marker}", {}, None
    yield 404, "GET", "/api/v1/runs/999999", {}, None
    yield 405, "POST", "/api/v1/projects", {"content-type": "application/json"}, b"{}"
    yield 400, "PATCH", run, {"content-type": "application/json"}, b'{"name": 5, "add_labels": "x"}'
    yield 400, "PATCH", run, {"content-type": "application/json"}, b"{not json"
    yield 400, "GET", f"{run}/artifacts/..%2fx", {}, None
    yield 404, "GET", f"{run}/artifacts/missing.txt", {}, None
    yield 400, "GET", "/api/v1/runs?limit=0", {"accept": f"text/{marker}"}, None
    yield 400, "PUT", "/api/v1/blobs/xyz", {"content-type": "application/octet-stream"}, marker.encode()
    yield 400, "POST", "/api/v1/ingest", {"content-type": "application/msgpack"}, b"\xc1" + marker.encode()


def test_error_bodies_are_json_and_never_echo_request_headers(api: Served) -> None:
    number = seed(api)
    c = api.client
    marker = f"mk{uuid.uuid4().hex}"
    everywhere = {"x-probe": marker, "user-agent": f"agent-{marker}", "cookie": f"session={marker}",
                  "referer": f"http://{marker}.example/", "x-forwarded-for": marker}
    for status, method, url, headers, body in _error_requests(number, marker):
        r = c.request(method, url, content=body, headers={**everywhere, **headers})
        assert r.status_code == status, (method, url, headers, r.status_code, r.text)
        assert_json_error(status, r.headers.get("content-type"), r.content)
        assert marker not in r.text, (method, url, r.text)
        assert all(marker not in v for v in r.headers.values()), (method, url, dict(r.headers))
    _, secret = Tokens(api.store).create("reader", "reader")
    no_token_cache(api)
    for headers in ({"authorization": f"Bearer {marker}"}, {"authorization": f"Basic {marker}"},
                    {"authorization": f"Bearer {secret}", "x-probe": marker}):
        method, url = ("PATCH", f"/api/v1/runs/{number}") if "x-probe" in headers else ("GET", "/api/v1/runs")
        r = c.request(method, url, content=b"{}", headers={**everywhere, **headers, "content-type": "application/json"})
        assert r.status_code in (401, 403), r.status_code
        assert_json_error(r.status_code, r.headers.get("content-type"), r.content)
        assert marker not in r.text and secret not in r.text


def test_unsatisfiable_range_error_is_json(api: Served) -> None:
    number = seed(api)
    api.client.put(f"/api/v1/runs/{number}/artifacts/a.txt", content=b"0123456789", headers=OCTETS)
    marker = f"mk{uuid.uuid4().hex}"
    for wanted in ("bytes=50-60", f"bytes={marker}", "bytes=0-1,3-4", f"items=0-1;{marker}"):
        r = api.client.get(f"/api/v1/runs/{number}/artifacts/a.txt", headers={"range": wanted})
        assert r.status_code == 416, (wanted, r.status_code)
        assert r.headers["content-range"] == "bytes */10"
        assert marker not in r.text
        assert_json_error(416, r.headers.get("content-type"), r.content)


# -- 5. a real server process ----------------------------------------------------------------------


def test_server_on_all_interfaces_needs_a_token_to_start_and_to_answer(db_url: str, tmp_path: Path) -> None:
    migrate_postgres(db_url)
    home = tmp_path / "server-home"
    env = home_env(home, db_url)
    port = free_port()
    refused = subprocess.run([sys.executable, "-m", "runyard.cli.main", "server", "--host", "0.0.0.0",
                              "--port", str(port), "--allow-host", "runyard.example"],
                             env=env, capture_output=True, timeout=60, check=False)
    said = (refused.stdout + refused.stderr).decode()
    assert refused.returncode != 0, said
    assert "runyard token create" in said

    opened = open_store(resolve(environ=env, cwd=tmp_path))
    try:
        _, secret = Tokens(opened.store).create("admin", "me")
        opened.store.create_run(NewRun(project="p", name="r", status=RunStatus.RUNNING))
    finally:
        opened.close()
    server = LiveServer(home, db_url, port=port, host="0.0.0.0", allow_hosts=("runyard.example",))
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        anonymous = httpx.get(f"{url}/api/v1/runs", timeout=5)
        assert anonymous.status_code == 401 and "error" in anonymous.json()
        assert httpx.get(f"{url}/api/v1/runs", headers=bearer("ry_nope_nope"), timeout=5).status_code == 401
        ok = httpx.get(f"{url}/api/v1/runs", headers=bearer(secret), timeout=5)
        assert ok.status_code == 200, ok.text
        assert ok.request.headers["host"] == f"127.0.0.1:{port}"
        assert [r["name"] for r in ok.json()["items"]] == ["r"]
        assert httpx.get(f"{url}/api/health", timeout=5).status_code == 401
    finally:
        server.kill()


@pytest.mark.engines("sqlite")  # the message does not depend on the engine
def test_a_client_without_a_token_is_told_once_to_set_runyard_token(db_url: str, tmp_path: Path) -> None:
    home = tmp_path / "server-home"
    opened = open_store(resolve(environ=home_env(home, db_url), cwd=tmp_path))
    try:
        Tokens(opened.store).create("admin", "me")  # a token exists: every request needs one
    finally:
        opened.close()
    server = LiveServer(home, db_url)
    server.start()
    try:
        client_env = {**home_env(tmp_path / "client-home", db_url), "RUNYARD_SERVER": server.url}
        missing, unknown = (subprocess.run([sys.executable, "-m", "runyard.cli.main", "ls"], env=e,
                                           capture_output=True, text=True, timeout=60, check=False)
                            for e in (client_env, {**client_env, "RUNYARD_TOKEN": "ry_nope_nope"}))
    finally:
        server.kill()
    assert missing.returncode == 1 and unknown.returncode == 1
    assert missing.stderr == ("runyard: error: this server needs a token: send `Authorization: Bearer <token>` "
                              "(set RUNYARD_TOKEN; an admin creates one with `runyard token create`)\n")
    # The server cannot prove it holds an unknown token, so the client does not even send it.
    assert unknown.stderr.startswith(f"runyard: error: not sending the token ry_nope_… (from env RUNYARD_TOKEN) to "
                                     f"{server.url}: that server does not prove it holds it, so the token is "
                                     "unknown or revoked there")


def _wire(port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
          ) -> tuple[int, bytes]:
    """One request whose target goes on the wire exactly as given."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.engines("sqlite")  # the wire corpus does not depend on the engine
def test_loopback_server_without_tokens_needs_none_and_refuses_escapes_on_the_wire(
        live_server: LiveServer, outside: Path) -> None:
    port = live_server.port
    url = f"http://127.0.0.1:{port}"
    listed = httpx.get(f"{url}/api/v1/runs", timeout=5)
    assert listed.status_code == 200 and listed.json()["items"] == []
    assert httpx.get(f"{url}/api/v1/runs", headers={"host": "evil.example"}, timeout=5).status_code == 400
    opened = open_store(resolve(environ=home_env(live_server.home, live_server.db_url), cwd=live_server.home))
    try:
        number = opened.store.create_run(NewRun(project="p", name="r", status=RunStatus.RUNNING)).number
    finally:
        opened.close()
    put = httpx.put(f"{url}/api/v1/runs/{number}/artifacts/a.txt", content=b"legit", headers=OCTETS, timeout=5)
    assert put.status_code == 200, put.text
    assert _wire(port, "GET", f"/api/v1/runs/{number}/artifacts/a.txt") == (200, b"legit")
    before = snapshot(outside)
    for escape in ESCAPES:
        target = f"/api/v1/runs/{number}/artifacts/{escape}"
        for method, body in (("GET", b""), ("PUT", b"PWNED " + SENTINEL)):
            status, got = _wire(port, method, target, body, OCTETS if body else None)
            assert status in (400, 404), (method, target, status, got[:200])
            assert SENTINEL not in got and b"root:" not in got
    for target in REF_ESCAPES:
        status, got = _wire(port, "GET", target)
        assert status in (400, 404) and SENTINEL not in got, (target, status)
    assert snapshot(outside) == before
    assert [a["path"] for a in httpx.get(f"{url}/api/v1/runs/{number}/artifacts", timeout=5).json()] == ["a.txt"]


# -- 6. no unpickling ------------------------------------------------------------------------------

BANNED_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve", "joblib", "jsonpickle"}


def _findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        found += [f"{path}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in BANNED_MODULES]
        if isinstance(node, ast.Call):
            fn = node.func
            dotted = ast.unparse(fn)
            if dotted in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all", "yaml.unsafe_load_all",
                          "pd.read_pickle", "pandas.read_pickle", "torch.load", "numpy.load", "np.load") or (
                    isinstance(fn, ast.Name) and fn.id in ("load", "unsafe_load", "full_load")):
                found.append(f"{path}:{node.lineno} calls {dotted}")
            if dotted in ("__import__", "importlib.import_module", "import_module") and any(
                    isinstance(a, ast.Constant) and str(a.value).split(".")[0] in BANNED_MODULES for a in node.args):
                found.append(f"{path}:{node.lineno} imports a banned module dynamically")
            if any(k.arg == "allow_pickle" for k in node.keywords):
                found.append(f"{path}:{node.lineno} passes allow_pickle")
    if re.search(r"\b(c?pickle|cloudpickle|dill)\b", re.sub(r"#.*", "", path.read_text())):
        found.append(f"{path} mentions a pickle module outside comments")
    return found


def test_server_and_ingest_never_unpickle() -> None:
    files = sorted([*(SRC / "server").rglob("*.py"), *(SRC / "ingest").rglob("*.py")])
    assert len(files) >= 4 and any(f.name == "app.py" for f in files)
    findings = [f for path in files for f in _findings(path)]
    assert not findings, findings
