"""A deflated ingest body is taken whole or not at all: its zlib checksum (the Adler-32 trailer) is
checked, and a body that is corrupted, cut short, or followed by anything after its stream is
refused with 400, with none of its records applied (issue 14: a batch is never partially applied)."""

from __future__ import annotations

import zlib

import msgpack
import pytest
from tests.unit.server.conftest import Served

from runyard.ids import new_ulid

HEADERS = {"content-type": "application/msgpack", "content-encoding": "deflate"}


def _start(name: str) -> list[object]:
    return [0, "e", 1.0, {"event": "start", "project": "p", "name": name, "config": {}, "labels": [],
                          "notes": "", "command": [], "host": "h", "environment": {}}]


def _batch(run_id: str, name: str, first: int = 0) -> bytes:
    items: list[object] = [_start(name)] if first == 0 else []
    items += [[seq, "l", 2.0, "stdout", f"line {seq}"] for seq in range(max(first, 1), first + 50)]
    return msgpack.packb({"run_id": run_id, "writer": "w1", "items": items})


def _flip(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1:]


def _cursor(api: Served, run_id: str) -> int:
    return int(api.client.get("/api/v1/ingest/cursor", params={"run": run_id, "writer": "w1"}).json()["cursor"])


SPOILED = {
    "checksum trailer changed": lambda z, other: _flip(z, len(z) - 1),
    "trailer cut off": lambda z, other: z[:-4],
    "half the trailer cut off": lambda z, other: z[:-2],
    "cut in the middle": lambda z, other: z[: len(z) // 2],
    "bytes after the stream": lambda z, other: z + b"\x00junk",
    "a second batch after the first": lambda z, other: z + other,
}


@pytest.mark.parametrize("case", list(SPOILED))
def test_a_spoiled_deflated_body_is_refused_and_nothing_of_it_is_applied(api: Served, case: str) -> None:
    run_id = new_ulid()
    plain = _batch(run_id, "spoiled")
    body = SPOILED[case](zlib.compress(plain), zlib.compress(_batch(run_id, "spoiled", first=50)))
    answer = api.client.post("/api/v1/ingest", content=body, headers=HEADERS)
    assert answer.status_code == 400, (answer.status_code, answer.text)
    assert "deflate" in answer.json()["error"]
    assert _cursor(api, run_id) == -1  # not a record of it applied
    assert api.client.get("/api/v1/runs/spoiled").status_code == 404
    # The same batch, sent whole, is applied.
    whole = api.client.post("/api/v1/ingest", content=zlib.compress(plain), headers=HEADERS)
    assert whole.status_code == 200, whole.text
    assert _cursor(api, run_id) == 49


def test_a_corrupted_block_inside_the_stream_is_refused(api: Served) -> None:
    run_id = new_ulid()
    compressed = zlib.compress(_batch(run_id, "corrupt"), 0)  # stored blocks: a flipped byte still inflates
    answer = api.client.post("/api/v1/ingest", content=_flip(compressed, len(compressed) // 2), headers=HEADERS)
    assert answer.status_code == 400, answer.text
    assert "checksum" in answer.json()["error"] or "check" in answer.json()["error"]
    assert _cursor(api, run_id) == -1
