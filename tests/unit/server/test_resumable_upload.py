"""Content sent to the server in pieces resumes where it stopped: what a Ray node's supervisor does
with a checkpoint (its outputs go through the server), when its network drops, it is killed, or the
server restarts mid-upload."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.unit.server.conftest import LiveServer, Served
from tests.unit.server.conftest import api as api
from tests.unit.server.conftest import live_server as live_server

from runyard import client as client_module
from runyard.client import Client
from runyard.errors import InvalidArgument
from runyard.store.tokens import Tokens

__all__ = ["api", "live_server"]

MIB = 1 << 20
OCTETS = {"content-type": "application/octet-stream"}


def piece(offset: int, total: int) -> dict[str, str]:
    return {**OCTETS, "upload-offset": str(offset), "upload-length": str(total)}


def test_a_checkpoint_cut_short_is_finished_from_where_it_stopped_even_across_a_server_restart(
        live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "RESUMABLE_FROM", 2 * MIB)
    monkeypatch.setattr(client_module, "PIECE_BYTES", MIB)
    data = os.urandom(5 * MIB + 17)
    sha = hashlib.sha256(data).hexdigest()
    url = f"{live_server.url}/api/v1/blobs/{sha}"
    # A node sent two pieces, then its network dropped half-way through the third.
    for start in (0, MIB):
        assert httpx.put(url, content=data[start:start + MIB], headers=piece(start, len(data))).json() == {
            "sha256": sha, "offset": start + MIB}

    def cut() -> Iterator[bytes]:
        yield data[2 * MIB:2 * MIB + MIB // 2]
        raise ConnectionResetError("the network dropped")

    with pytest.raises((httpx.HTTPError, ConnectionResetError)):
        httpx.put(url, content=cut(), headers=piece(2 * MIB, len(data)))
    live_server.restart()  # and the server restarted meanwhile: what arrived is on its disk
    standing = httpx.get(f"{url}/upload").json()["offset"]
    assert 2 * MIB <= standing < 3 * MIB
    # A piece that does not start where the upload stands is refused, and says where it stands.
    wrong = httpx.put(url, content=data[:MIB], headers=piece(0, len(data)))
    assert wrong.status_code == 409 and f"byte {standing}" in wrong.json()["error"]

    sent: list[tuple[str, str, int]] = []
    node = Client(live_server.url)
    http_request = node.http.request

    def counted(method: str, path: str, **kwargs: Any) -> httpx.Response:
        sent.append((method, path.rsplit("/", 1)[-1], len(kwargs.get("content") or b"")))
        return http_request(method, path, **kwargs)

    monkeypatch.setattr(node.http, "request", counted)
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(data)
    try:
        node.put_blob(sha, source)
    finally:
        node.close()
    puts = [size for method, _, size in sent if method == "PUT"]
    assert sum(puts) == len(data) - standing  # the rest, not the whole file again
    assert len(puts) == -(-(len(data) - standing) // MIB)
    assert httpx.get(url).content == data
    assert httpx.get(f"{url}/upload").json()["offset"] == 0  # nothing left lying about


def test_each_tokens_pieces_are_its_own_and_content_that_is_not_its_name_is_discarded(api: Served) -> None:
    made = Tokens(api.store)
    _, first = made.create("writer", "node-1")
    _, second = made.create("writer", "node-2")
    api.client.app.state.policy.tokens_check_interval = 0  # type: ignore[attr-defined]
    a, b = ({"authorization": f"Bearer {secret}"} for secret in (first, second))
    data = os.urandom(3 * MIB)
    sha = hashlib.sha256(data).hexdigest()
    url = f"/api/v1/blobs/{sha}"
    assert api.client.put(url, content=data[:MIB], headers={**a, **piece(0, len(data))}).json()["offset"] == MIB
    # Another token neither sees nor continues that upload: its own starts at 0.
    assert api.client.get(f"{url}/upload", headers=b).json()["offset"] == 0
    assert api.client.put(url, content=data[MIB:2 * MIB], headers={**b, **piece(MIB, len(data))}).status_code == 409
    # Bytes that are not the named content: refused when they complete it, and all discarded.
    forged = api.client.put(url, content=os.urandom(2 * MIB), headers={**a, **piece(MIB, len(data))})
    assert forged.status_code == 400 and "discarded" in forged.json()["error"]
    assert api.client.get(f"{url}/upload", headers=a).json()["offset"] == 0
    assert api.client.get(url, headers=a).status_code == 404
    # A piece past the length it declared, or headers that make no sense: clear refusals.
    assert api.client.put(url, content=data[:MIB + 1], headers={**a, **piece(2 * MIB, len(data))}).status_code == 409
    over = api.client.put(url, content=data[:2 * MIB], headers={**a, **piece(0, MIB)})
    assert over.status_code == 400 and "past Upload-Length" in over.json()["error"]
    assert api.client.get(f"{url}/upload", headers=a).json()["offset"] == 0
    bad = api.client.put(url, content=b"x", headers={**a, **OCTETS, "upload-offset": "-1", "upload-length": "9"})
    assert bad.status_code == 400
    # Whole, in pieces, by the rightful uploader: stored, and readable by its token.
    for start in range(0, len(data), MIB):
        api.client.put(url, content=data[start:start + MIB], headers={**b, **piece(start, len(data))})
    assert api.client.get(url, headers=b).content == data


def test_a_token_cannot_leave_unfinished_uploads_without_bound(api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    from runyard.server import resumable

    monkeypatch.setattr(resumable, "MAX_UNFINISHED", 3)
    started = []
    for i in range(3):
        data = f"checkpoint {i}".encode() * 1000
        sha = hashlib.sha256(data).hexdigest()
        answer = api.client.put(f"/api/v1/blobs/{sha}", content=data[:100], headers=piece(0, len(data)))
        assert answer.json()["offset"] == 100
        started.append((sha, data))
    fourth = hashlib.sha256(b"one too many").hexdigest()
    refused = api.client.put(f"/api/v1/blobs/{fourth}", content=b"one", headers=piece(0, 12))
    assert refused.status_code == 409 and "unfinished" in refused.json()["error"]
    # Those under way go on; once one is finished, a new one may start.
    sha, data = started[0]
    done = api.client.put(f"/api/v1/blobs/{sha}", content=data[100:], headers=piece(100, len(data)))
    assert done.json() == {"sha256": sha, "size": len(data)}
    assert api.client.put(f"/api/v1/blobs/{fourth}", content=b"one", headers=piece(0, 12)).json()["offset"] == 3


def counting(node: Client, monkeypatch: pytest.MonkeyPatch, after: Any = None) -> list[tuple[str, int, int]]:
    """Record (method, offset, bytes) of each request ``node`` sends; ``after(method, headers, answer)``
    may act once a request was answered."""
    sent: list[tuple[str, int, int]] = []
    http_request = node.http.request

    def counted(method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.get("headers") or {}
        sent.append((method, int(headers.get("upload-offset", -1)), len(kwargs.get("content") or b"")))
        answer = http_request(method, path, **kwargs)
        if after is not None:
            after(method, headers, answer)
        return answer

    monkeypatch.setattr(node.http, "request", counted)
    return sent


def test_a_lost_answer_to_the_last_piece_does_not_send_the_content_again(
        live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Storing a big checkpoint can outlast the client's read timeout: the last piece's answer is
    # lost, though the server stored it. The client asks, and stops there.
    monkeypatch.setattr(client_module, "RESUMABLE_FROM", 2 * MIB)
    monkeypatch.setattr(client_module, "PIECE_BYTES", MIB)
    data = os.urandom(3 * MIB + 5)
    source = tmp_path / "checkpoint.pt"
    source.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    node = Client(live_server.url)
    lost = []

    def lose_the_last_answer(method: str, headers: dict[str, str], answer: httpx.Response) -> None:
        if method == "PUT" and "offset" not in answer.json() and not lost:
            lost.append(answer)
            raise httpx.ReadTimeout("the server took too long to answer")

    sent = counting(node, monkeypatch, lose_the_last_answer)
    try:
        node.put_blob(sha, source)
    finally:
        node.close()
    assert lost  # the answer was lost once
    assert sum(size for method, _, size in sent if method == "PUT") <= len(data) + MIB  # not twice the content
    assert httpx.get(f"{live_server.url}/api/v1/blobs/{sha}").content == data


def test_a_file_that_gets_shorter_while_it_goes_up_is_an_error_not_an_endless_loop(
        live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "RESUMABLE_FROM", 2 * MIB)
    monkeypatch.setattr(client_module, "PIECE_BYTES", MIB)
    source = tmp_path / "last.ckpt"
    source.write_bytes(os.urandom(3 * MIB))
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    node = Client(live_server.url)

    def training_rewrites_it(method: str, headers: dict[str, str], answer: httpx.Response) -> None:
        if method == "PUT":
            with source.open("r+b") as f:
                f.truncate(MIB)  # truncate-then-write, as torch.save does

    sent = counting(node, monkeypatch, training_rewrites_it)
    try:
        with pytest.raises(InvalidArgument, match="got shorter"):
            node.put_blob(sha, source)
    finally:
        node.close()
    assert len([m for m, _, _ in sent if m == "PUT"]) == 1
    empty = httpx.put(f"{live_server.url}/api/v1/blobs/{sha}", content=b"", headers=piece(MIB, 3 * MIB))
    assert empty.status_code == 400 and "empty piece" in empty.json()["error"]


def test_pieces_refused_leave_nothing_behind(api: Served) -> None:
    # A piece further on of an upload the server does not hold is refused, and creates no file: a
    # token cannot fill the server's disk with them, nor use up its own bound on unfinished uploads.
    for i in range(40):
        sha = hashlib.sha256(f"never started {i}".encode()).hexdigest()
        refused = api.client.put(f"/api/v1/blobs/{sha}", content=b"x", headers=piece(1, 2))
        assert refused.status_code == 409 and "byte 0" in refused.json()["error"]
    scratch = api.opened.artifacts.scratch
    assert [p for p in scratch.iterdir() if p.name.startswith("partial-")] == []
    data = b"a real upload" * 10
    sha = hashlib.sha256(data).hexdigest()
    assert api.client.put(f"/api/v1/blobs/{sha}", content=data[:7], headers=piece(0, len(data))).json()["offset"] == 7
    assert api.client.get(f"/api/v1/blobs/{sha}/upload").json() == {"sha256": sha, "offset": 7, "stored": False}


def test_a_retried_upload_sends_what_was_left_to_read_not_the_file_from_its_start(
        live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(100_000)
    source = tmp_path / "archive.bin"
    source.write_bytes(b"a header before the content" + data)
    sha = hashlib.sha256(data).hexdigest()
    node = Client(live_server.url)
    http_request = node.http.request
    calls = []

    def first_try_fails(method: str, path: str, **kwargs: Any) -> httpx.Response:
        calls.append(method)
        if calls.count("PUT") == 1 and method == "PUT":
            raise httpx.ConnectError("connection reset")
        return http_request(method, path, **kwargs)

    monkeypatch.setattr(node.http, "request", first_try_fails)
    try:
        with source.open("rb") as f:
            f.seek(len(b"a header before the content"))
            node.put_blob(sha, f)
    finally:
        node.close()
    assert calls.count("PUT") == 2
    assert httpx.get(f"{live_server.url}/api/v1/blobs/{sha}").content == data
