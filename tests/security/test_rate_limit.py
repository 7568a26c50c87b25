"""Requests per second per token (issue 14): a token sending more than the server takes from one
token is answered 429 with ``Retry-After``, while other tokens go on being served; the default
is far above what a client of runyard sends, one request after another."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi.testclient import TestClient
from tests.unit.server.conftest import served_app

from runyard.server.capacity import Limits
from runyard.store.tokens import Tokens


@contextmanager
def _client(tmp_path: Path, db_url: str, limits: Limits) -> Iterator[tuple[TestClient, list[str]]]:
    with served_app(db_url, tmp_path, limits=limits) as served:
        yield served.client, [Tokens(served.store).create("writer", name=f"t{n}")[1] for n in range(2)]


def _get(client: TestClient, token: str, path: str = "/api/v1/projects") -> int:
    return client.get(path, headers={"authorization": f"Bearer {token}"}).status_code


def test_a_token_past_its_rate_gets_429_with_retry_after_and_others_are_served(tmp_path: Path, db_url: str) -> None:
    with _client(tmp_path, db_url, Limits(rate=0.5, burst=20)) as (client, (flooder, other)):
        assert [_get(client, flooder) for _ in range(20)] == [200] * 20
        refused = client.get("/api/v1/projects", headers={"authorization": f"Bearer {flooder}"})
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert "requests" in refused.json()["error"]
        assert _get(client, flooder, "/api/health") == 429  # every route counts, a cheap one too
        assert _get(client, other) == 200  # another token is not held back by the first
        # A request refused for its rate is not one the token makes: it is refused whatever it asks.
        assert client.post("/api/v1/blobs/missing", json={"sha256": []},
                           headers={"authorization": f"Bearer {flooder}"}).status_code == 429


def test_a_client_making_requests_one_after_another_is_never_limited_by_default(tmp_path: Path,
                                                                                 db_url: str) -> None:
    with _client(tmp_path, db_url, Limits()) as (client, (token, _)):
        answers = {_get(client, token, "/api/health") for _ in range(600)}
        assert answers == {200}


def test_runyards_client_waits_out_a_429_and_gets_every_call_through(db_url: str, tmp_path: Path) -> None:
    # A server started with a low --rate: the CLI's and shipper's client sends more than the burst,
    # GETs (retried anyway) and POSTs (never retried on a 5xx) alike, and none fails.
    import time

    from tests.unit.server.conftest import LiveServer, migrate_postgres

    from runyard import credential
    from runyard.client import Client

    migrate_postgres(db_url)
    server = LiveServer(tmp_path / "server-home", db_url, insecure_local=False, args=("--rate", "4", "--burst", "3"))
    server.start()
    try:
        client = Client(server.url, credential.read_local(server.home))
        try:
            began = time.monotonic()
            sha = "0" * 64
            for _ in range(5):
                assert client.get("/projects") == []
                assert client.request("POST", "/blobs/missing", json={"sha256": [sha]}).json() == {"missing": [sha]}
            waited = time.monotonic() - began
        finally:
            client.close()
        # 10 calls at 4/s after a burst of 3 wait out the server's Retry-After (1 s) at least once.
        assert waited >= 1.0
    finally:
        server.kill()
