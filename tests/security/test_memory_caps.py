"""Small requests cannot make the server use much memory (issue 14, item 5).

A deflated ingest body is inflated only up to a cap and decoded only up to a count of values; every
upload streams to disk, whatever its content type, and none may pass the upload limit; heavy
requests beyond the server's slots are answered 503 with ``Retry-After``, which the client follows.
Real server processes on loopback; their peak memory is read from /proc (VmHWM)."""

from __future__ import annotations

import hashlib
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
from tests.security.servers import read_head, serving
from tests.unit.server.conftest import LiveServer, Served, migrate_postgres
from tests.unit.server.conftest import api as api
from tests.unit.server.conftest import live_server as live_server

from runyard.client import Client
from runyard.errors import Busy
from runyard.ingest.shipper import Backoff
from runyard.server.capacity import Limits

RUN_ID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
INGEST_HEADERS = {"content-type": "application/msgpack", "content-encoding": "deflate"}
MIB = 1 << 20


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _bomb(arrays: int) -> bytes:
    """``arrays`` arrays of 100,000 nils each: 100 KB of msgpack per array, about 100 bytes deflated."""
    return zlib.compress(msgpack.packb({"run_id": RUN_ID, "writer": "w1", "items": [[None] * 100_000] * arrays}), 9)


def _post_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    answers: list[httpx.Response] = []

    def post(body: bytes) -> None:
        answers.append(httpx.post(f"{url}/api/v1/ingest", content=body, headers=INGEST_HEADERS, timeout=60))

    threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_deflate_bombs_are_refused_and_the_server_stays_small(live_server: LiveServer) -> None:
    assert live_server.process is not None
    pid = live_server.process.pid
    assert httpx.get(f"{live_server.url}/api/health").status_code == 200
    before = peak_rss(pid)
    nils = _bomb(630)  # 63 MB of nils from about 60 KB (the bomb): 63 million values
    zeros = zlib.compress(msgpack.packb({"run_id": RUN_ID, "writer": "w1", "items": [b"\0" * (16 * MIB)] * 4}), 9)
    assert len(nils) < 100_000 and len(zeros) < 100_000  # 64 MiB of zeros: past the inflated size taken
    answers = _post_all(live_server.url, [nils, zeros] * 3)  # six at once
    assert sorted(r.status_code for r in answers) == [413] * 6, [r.text[:200] for r in answers]
    errors = {r.json()["error"] for r in answers}
    assert any("inflates beyond" in e for e in errors) and any(e.startswith("items:") for e in errors), errors
    grown = peak_rss(pid) - before
    assert grown < 200 * MIB, f"the server's peak memory grew by {grown / MIB:.0f} MiB"
    started = time.monotonic()
    assert httpx.get(f"{live_server.url}/api/health").status_code == 200
    assert time.monotonic() - started < 1.0


def test_too_many_values_are_refused_naming_the_field(api: Served) -> None:
    records = [[n, "log", 1.0, "stdout", "x"] for n in range(150_000)]  # more records than one request takes
    body = zlib.compress(msgpack.packb({"run_id": RUN_ID, "writer": "w1", "items": records}), 1)
    refused = api.client.post("/api/v1/ingest", content=body, headers=INGEST_HEADERS)
    assert refused.status_code == 413 and refused.json()["error"].startswith("items:"), refused.text
    wide = [[None] * 50_000] * 40  # 2 million values in 40 arrays, each within bounds
    refused = api.client.post("/api/v1/ingest", content=_wide(wide), headers=INGEST_HEADERS)
    assert refused.status_code == 413 and refused.json()["error"].startswith("items:"), refused.text
    assert "values" in refused.json()["error"]


def _wide(items: list[object]) -> bytes:
    return zlib.compress(msgpack.packb({"run_id": RUN_ID, "writer": "w1", "items": items}), 1)


def _put_head(port: int, sha: str, length: int | None, content_type: str = "application/msgpack") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    size = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    s.sendall(f"PUT /api/v1/blobs/{sha} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {content_type}\r\n"
              f"{size}\r\n\r\n".encode())
    return s


def _answer(s: socket.socket) -> str:
    return read_head(s).decode("latin-1")


def test_a_msgpack_upload_past_the_limit_is_refused_before_its_body_is_read(db_url: str, tmp_path: Path) -> None:
    migrate_postgres(db_url)
    server = LiveServer(tmp_path / "server-home", db_url, args=("--max-upload", "64"))
    server.start()
    try:
        sha = "0" * 64
        declared = 300 * MIB
        # With its length: refused from the headers.
        s = _put_head(server.port, sha, declared + 5)
        s.sendall(b"\xc6" + declared.to_bytes(4, "big") + b"\0" * 65536)
        assert _answer(s).startswith("HTTP/1.1 413"), "a 300 MB msgpack PUT was not refused at once"
        s.close()
        # Without (chunked): refused from the bin value's header, the rest never read.
        s = _put_head(server.port, sha, None)
        head = b"\xc6" + declared.to_bytes(4, "big") + b"\0" * 65536
        s.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        assert _answer(s).startswith("HTTP/1.1 413")
        s.close()
        # Any other content type: refused from its length, or once past the limit while streaming.
        s = _put_head(server.port, sha, declared, "application/octet-stream")
        assert _answer(s).startswith("HTTP/1.1 413")
        s.close()
        s = _put_head(server.port, sha, None, "application/octet-stream")
        chunk = b"\0" * MIB
        for _ in range(65):  # the 65th MiB is past the limit: the answer comes without the body's end
            s.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        assert _answer(s).startswith("HTTP/1.1 413")
        s.close()
    finally:
        server.kill()


def test_a_msgpack_upload_streams_to_disk(live_server: LiveServer) -> None:
    assert live_server.process is not None
    pid = live_server.process.pid
    content = b"runyard!" * (12 * MIB)  # 96 MiB
    sha = hashlib.sha256(content).hexdigest()
    assert httpx.get(f"{live_server.url}/api/health").status_code == 200
    before = peak_rss(pid)

    def body() -> Iterator[bytes]:  # no Content-Length: nothing to size a buffer by
        yield b"\xc6" + len(content).to_bytes(4, "big")
        for at in range(0, len(content), MIB):
            yield content[at:at + MIB]

    stored = httpx.put(f"{live_server.url}/api/v1/blobs/{sha}", content=body(),
                       headers={"content-type": "application/msgpack"}, timeout=60)
    assert stored.status_code == 200 and stored.json() == {"sha256": sha, "size": len(content)}, stored.text
    grown = peak_rss(pid) - before
    assert grown < 32 * MIB, f"a 96 MiB upload made the server's peak memory grow by {grown / MIB:.0f} MiB"


def test_heavy_requests_past_capacity_get_503_with_retry_after(db_url: str, tmp_path: Path) -> None:
    limits = Limits(upload_slots=2, slot_wait=0.5)
    with serving(tmp_path, limits, db_url) as port:
        holders = [_put_head(port, "1" * 64, 10 * MIB, "application/octet-stream") for _ in range(2)]
        for s in holders:
            s.sendall(b"\0" * 1024)  # and then nothing: each holds an upload slot
        time.sleep(0.3)
        started = time.monotonic()
        refused = httpx.put(f"http://127.0.0.1:{port}/api/v1/blobs/{'2' * 64}", content=b"x",
                            headers={"content-type": "application/octet-stream"}, timeout=10)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5", refused.text
        assert time.monotonic() - started < 3
        for s in holders:
            s.close()
        data = b"fits now"
        deadline = time.monotonic() + 5
        while True:
            ok = httpx.put(f"http://127.0.0.1:{port}/api/v1/blobs/{hashlib.sha256(data).hexdigest()}",
                           content=data, headers={"content-type": "application/octet-stream"}, timeout=10)
            if ok.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert ok.status_code == 200, ok.text


def test_a_busy_database_gets_503_with_retry_after(api: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlalchemy.exc

    def locked() -> None:  # the server answers by the exception's type, whatever the engine's words
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("database is locked"))

    monkeypatch.setattr(api.store, "list_projects", locked)
    answer = api.client.get("/api/health")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5", answer.headers


def test_the_client_and_the_shipper_wait_as_long_as_a_busy_server_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    answers = iter([httpx.Response(503, headers={"retry-after": "7"}, json={"error": "busy", "status": 503}),
                    httpx.Response(200, json={"status": "ok"})])
    client = Client("http://127.0.0.1:9")
    client.http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(lambda request: next(answers)))
    assert client.health() == {"status": "ok"}
    assert slept and slept[0] >= 7, slept
    client.http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(
        lambda request: httpx.Response(503, headers={"retry-after": "9"}, json={"error": "busy", "status": 503})))
    with pytest.raises(Busy) as busy:
        client.health()
    assert busy.value.retry_after == 9
    assert Backoff().failed(busy.value.retry_after) >= 9  # the agent's next pass waits as long


def test_a_batch_refused_as_too_large_is_sent_in_halves() -> None:
    sizes: list[int] = []

    def server(request: httpx.Request) -> httpx.Response:
        items = msgpack.unpackb(zlib.decompress(request.content))["items"]
        sizes.append(len(items))
        if len(items) > 3:
            return httpx.Response(413, json={"error": "items: too many", "status": 413})
        return httpx.Response(200, content=msgpack.packb({"run_number": 1, "cursor": items[-1][0]}))

    client = Client("http://127.0.0.1:9")
    client.http = httpx.Client(base_url=client.url, transport=httpx.MockTransport(server))
    records = [[n, "log", 1.0, "stdout", "x"] for n in range(10)]
    assert client.ingest(RUN_ID, "w1", records) == (1, 9)
    assert sizes == [10, 5, 2, 3, 5, 2, 3], sizes


def test_a_json_body_of_many_small_values_is_refused_before_it_is_parsed(api: Served) -> None:
    from runyard.store.newrun import NewRun

    bomb = b'{"sha256": [' + b",".join([b"[]"] * 300_000) + b"]}"  # 900 KB; parsed, about 20 MB and 0.7 s
    refused = api.client.post("/api/v1/blobs/missing", content=bomb, headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "values" in refused.json()["error"], refused.text
    number = api.store.create_run(NewRun(project="p")).number
    note = 'a, "quoted", \\ and more, ' * 40_000  # a million characters, 80,000 commas: within strings
    changed = api.client.patch(f"/api/v1/runs/{number}", json={"notes": note})
    assert changed.status_code == 200 and api.store.get_run(number).notes == note, changed.text
