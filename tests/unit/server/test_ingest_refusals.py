"""The ingest route on both engines: a wide batch is applied; a batch the server can never apply is
refused with a 4xx that names why (a shipper retries 503s, so a 503 here would be retried forever)."""

from __future__ import annotations

import zlib
from typing import Any

import msgpack
from tests.unit.server.conftest import Served

from runyard.ids import new_ulid
from runyard.spool.records import SEQ, STEP, TIME

HEADERS = {"content-type": "application/msgpack", "content-encoding": "deflate"}


def body(run_id: str, items: list[Any], writer: str = "w1") -> bytes:
    return zlib.compress(msgpack.packb({"run_id": run_id, "writer": writer, "items": items}), 1)


def start(name: str) -> list[Any]:
    return [0, "e", 1.0, {"event": "start", "project": "p", "name": name, "config": {}, "labels": [],
                          "notes": "", "command": [], "host": "h", "environment": {}}]


def cursor(api: Served, run_id: str, writer: str = "w1") -> int:
    return int(api.client.get("/api/v1/ingest/cursor", params={"run": run_id, "writer": writer}).json()["cursor"])


def test_a_batch_of_5000_metric_names_is_applied(api: Served) -> None:
    run_id = new_ulid()
    steps = [{**{f"layer{i}/grad_norm": step + i / 10_000 for i in range(5000)}, SEQ: 1 + step, TIME: 2.0 + step,
              STEP: step} for step in range(3)]
    answer = api.client.post("/api/v1/ingest", content=body(run_id, [start("wide"), *steps]), headers=HEADERS)
    assert answer.status_code == 200, answer.text
    assert msgpack.unpackb(answer.content)["cursor"] == 3
    series = api.client.get("/api/v1/runs/wide/metrics").json()
    assert len(series) == 5000 and {s["count"] for s in series} == {3}


def test_an_exit_code_no_column_can_hold_is_refused_with_400_naming_it(api: Served) -> None:
    run_id = new_ulid()
    assert api.client.post("/api/v1/ingest", content=body(run_id, [start("big-exit")]),
                           headers=HEADERS).status_code == 200
    # An exit code beyond 32 bits: checked with the record's other fields (ingest/fields.py) before
    # the database is asked (SQLite's driver cannot convert it, PostgreSQL's column cannot hold it).
    end = [1, "e", 3.0, {"event": "end", "status": "finished", "exit_code": 2**64 - 1}]
    for _ in range(2):  # the same answer however often it is sent
        refused = api.client.post("/api/v1/ingest", content=body(run_id, [end]), headers=HEADERS)
        assert refused.status_code == 400, refused.text
        assert "end.exit_code must be an integer within 32 bits" in refused.json()["error"]
    assert cursor(api, run_id) == 0  # nothing of it was applied
    assert api.client.get("/api/v1/runs/big-exit").json()["status"] == "running"
    # Other records of the run still go in.
    later = [{"loss": 0.5, SEQ: 2, TIME: 4.0, STEP: 0}]
    assert api.client.post("/api/v1/ingest", content=body(run_id, later, writer="w2"),
                           headers=HEADERS).status_code == 200


def test_records_no_run_can_apply_are_refused_with_400_naming_why(api: Served) -> None:
    run_id = new_ulid()
    items = [start("odd-end"), [1, "e", 3.0, {"event": "end", "status": "exploded"}]]
    refused = api.client.post("/api/v1/ingest", content=body(run_id, items), headers=HEADERS)
    assert refused.status_code == 400, refused.text
    assert "end.status" in refused.json()["error"]
    assert "'exploded'" in refused.json()["error"]
    assert cursor(api, run_id) == -1
