"""Issue 14, item 11: a writer token sent what the SDK would never write (metric names with
newlines, quotes or a million characters, a host that is a map, a config that is a list, msgpack
extension types, sequence and run numbers past 64 bits, a sort key with a NUL). Each is refused
with 400 naming the field, on both engines, never applied and never a 500 or a 503; the SDK
refuses the same names with the same rule (runyard.names)."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from tests.unit.server.conftest import LiveServer, Served, home_env

import runyard
from runyard.config import resolve
from runyard.errors import InvalidArgument
from runyard.ids import new_ulid
from runyard.spool.records import SEQ, STEP, TIME
from runyard.store.home import open_store
from runyard.store.tokens import Tokens

HEADERS = {"content-type": "application/msgpack", "content-encoding": "deflate"}


def start(**change: Any) -> list[Any]:
    event = {"event": "start", "project": "p", "name": "r", "config": {}, "labels": [], "notes": "",
             "command": [], "host": "h", "environment": {}, **change}
    return [0, "e", 1.0, event]


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def metric(name: str) -> dict[str, Any]:
    return {name: 1.0, SEQ: 1, TIME: 2.0, STEP: 0}


#: What an attacker sent, and the field the 400 must name.
MALFORMED: dict[str, tuple[list[Any], str]] = {
    "metric name with a newline": ([start(), metric("loss\nfake_line")], "metric name"),
    "metric name with a quote": ([start(), metric('loss"); drop')], "metric name"),
    "metric name a million characters long": ([start(), metric("m" * 1_000_000)], "metric name"),
    "summary key with a newline": ([start(), [1, "s", 2.0, {"acc\nx": 1.0}]], "summary key"),
    "config key a million characters long": ([start(), [1, "c", 2.0, {"k" * 1_000_000: 1}]], "config key"),
    "unknown end.status": ([start(), [1, "e", 2.0, {"event": "end", "status": "exploded"}]], "end.status"),
    "end.status queued": ([start(), [1, "e", 2.0, {"event": "end", "status": "queued"}]], "end.status"),
    "end.exit_code as text": ([start(), [1, "e", 2.0, {"event": "end", "status": "failed", "exit_code": "1"}]],
                              "end.exit_code"),
    "end.message as a map": ([start(), [1, "e", 2.0, {"event": "end", "status": "failed", "message": {"a": 1}}]],
                             "end.message"),
    "host as a map": ([start(host={"name": "h"})], "start.host"),
    "config as a list": ([start(config=[1, 2])], "start.config"),
    "config record as a list": ([start(), [1, "c", 2.0, [1, 2]]], "config"),
    "name as a number": ([start(name=5)], "start.name"),
    "project as a number": ([start(project=5)], "start.project"),
    "labels as text": ([start(labels="abc")], "start.labels"),
    "command as text": ([start(command="rm -rf /")], "start.command"),
    "environment as a list": ([start(environment=[1])], "start.environment"),
    "msgpack extension type": ([start(), [1, "l", 2.0, "stdout", msgpack.ExtType(5, b"xx")]], "extension type"),
    "seq = 2**63": ([start(), [2**63, "l", 2.0, "stdout", "x"]], "seq"),
    "time as text": ([start(), [1, "l", "now", "stdout", "x"]], "time"),
    "time NaN": ([start(), [1, "l", float("nan"), "stdout", "x"]], "time"),
    "event as a list": ([start(), [1, "e", 2.0, [1, 2]]], "event"),
    "artifact size as text": ([start(), [1, "a", 2.0, "p.txt", "x", "0" * 64, "ref"]], "artifact size"),
    # Found by test_ingest_properties: values msgpack decodes but the store's JSON cannot hold (a 500).
    "config value as bytes": ([start(), [1, "c", 2.0, {"a": b"x"}]], "config['a']"),
    "start.config value a msgpack timestamp": ([start(config={"a": msgpack.Timestamp(1, 0)})], "start['config']['a']"),
    "summary value as bytes": ([start(), [1, "s", 2.0, {"a": [b"x"]}]], "summary['a'][0]"),
    "environment value as bytes": ([start(), [1, "e", 2.0, {"event": "environment", "x": b"x"}]], "environment['x']"),
    "config nested 300 deep": ([start(), [1, "c", 2.0, {"a": nested(300)}]], "nested deeper than 64"),
    "git_commit as a map": ([start(), [1, "e", 2.0, {"event": "environment", "git_commit": {"a": 1}}]],
                            "environment.git_commit"),
    "start.environment git_branch as a number": ([start(environment={"git_branch": 2**63})],
                                                 "start.environment.git_branch"),
    "metric time NaN": ([start(), {"loss": 1.0, SEQ: 1, TIME: float("nan"), STEP: 0}], "a time of metrics"),
    "metric time infinite": ([start(), {"loss": 1.0, SEQ: 1, TIME: float("inf"), STEP: 0}], "a time of metrics"),
    "log record without its text": ([start(), [1, "l", 2.0]], "record 1 (log) has 3 items; it needs 5"),
    "metrics record without a step": ([start(), {"loss": 1.0, SEQ: 1, TIME: 2.0}], "has no step"),
    "input from a run that does not exist": ([start(), [1, "i", 2.0, "artifact", "0" * 64, 10**9, None, None]],
                                             "input source_run"),
}

#: Reads an attacker tried, and the field the 400 must name.
MALFORMED_READS: dict[str, tuple[str, str]] = {
    "run number past 64 bits": ("/api/v1/runs/18446744073709551616", "run reference"),
    "run number 2**63": ("/api/v1/runs/9223372036854775808/metrics", "run reference"),
    "sort key with NUL": ("/api/v1/runs?sort=config.a%00b", "sort"),
    "summary sort key with NUL": ("/api/v1/runs?sort=summary.a%00b", "sort"),
    "project filter with NUL": ("/api/v1/runs?project=a%00b", "project"),
    "label filter with NUL": ("/api/v1/runs?label=a%00b", "label"),
    "run name with NUL": ("/api/v1/runs/a%00b", "run reference"),
    "ingest cursor writer with NUL": (f"/api/v1/ingest/cursor?run={'0' * 26}&writer=a%00", "writer"),
}


def packed(run_id: str, items: list[Any]) -> bytes:
    return zlib.compress(msgpack.packb({"run_id": run_id, "writer": "w1", "items": items}), 1)


def writer_token(api: Served, project: str | None = "p") -> dict[str, str]:
    _, secret = Tokens(api.store).create("writer", f"writer-{project}", project=project)
    api.client.app.state.policy.tokens_check_interval = 0
    return {"authorization": f"Bearer {secret}"}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_writer_token_sending_malformed_records_gets_400_naming_the_field_and_nothing_is_applied(
        api: Served, case: str) -> None:
    items, field = MALFORMED[case]
    auth = writer_token(api)
    run_id = new_ulid()
    answer = api.client.post("/api/v1/ingest", content=packed(run_id, items), headers={**HEADERS, **auth})
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]
    assert len(answer.text) < 2000  # a million-character name is not echoed back
    cursor = api.client.get("/api/v1/ingest/cursor", params={"run": run_id, "writer": "w1"}, headers=auth)
    assert cursor.json()["cursor"] == -1


def test_a_project_limited_writer_cannot_link_its_run_to_a_run_of_another_project(api: Served) -> None:
    # Found by test_ingest_properties: an input record naming another project's run as its source was
    # stored (and one naming no run gave 409 "a concurrent change", telling which run numbers exist).
    other = api.client.post("/api/v1/ingest", content=packed(new_ulid(), [start(project="a")]),
                            headers={**HEADERS, **writer_token(api, "a")})
    source = msgpack.unpackb(other.content)["run_number"]
    auth = writer_token(api, "b")
    answers = []
    for number in (source, 10**9):
        run_id = new_ulid()
        items = [start(project="b", name=f"b{number}"), [1, "i", 2.0, "artifact", "0" * 64, number, None, None]]
        answers.append(api.client.post("/api/v1/ingest", content=packed(run_id, items), headers={**HEADERS, **auth}))
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json()["error"] == f"input source_run: no run {source} in project b"
    assert api.store.consumers_of_run(source) == []


@pytest.mark.parametrize("case", list(MALFORMED_READS))
def test_a_malformed_run_reference_or_query_gets_400_naming_it_not_500_or_503(api: Served, case: str) -> None:
    path, field = MALFORMED_READS[case]
    answer = api.client.get(path, headers=writer_token(api, project=None))
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]


def test_a_real_server_refuses_every_malformed_batch_with_400(live_server: LiveServer) -> None:
    settings = resolve(environ=home_env(live_server.home, live_server.db_url), cwd=live_server.home)
    opened = open_store(settings)
    try:
        _, secret = Tokens(opened.store).create("writer", "writer")
    finally:
        opened.close()
    auth = {"authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=live_server.url, headers=auth, timeout=30) as client:
        for case, (items, field) in MALFORMED.items():
            answer = client.post("/api/v1/ingest", content=packed(new_ulid(), items), headers=HEADERS)
            assert answer.status_code == 400 and field in answer.json()["error"], (case, answer.text[:300])
        for case, (path, field) in MALFORMED_READS.items():
            answer = client.get(path)
            assert answer.status_code == 400 and field in answer.json()["error"], (case, answer.text[:300])
        # What the SDK and supervisors send still goes in.
        run_id = new_ulid()
        good = [start(), metric("loss"), [2, "e", 3.0, {"event": "end", "status": "finished", "exit_code": 0}]]
        assert client.post("/api/v1/ingest", content=packed(run_id, good), headers=HEADERS).status_code == 200
        assert client.get("/api/v1/runs/r").json()["status"] == "finished"


@pytest.mark.parametrize("key", ["loss\nx", 'a"b', "m" * 1_000_000, ""])
def test_the_sdk_refuses_the_same_names_and_keys_as_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               key: str) -> None:
    monkeypatch.setenv("RUNYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNYARD_SYSTEM_INTERVAL", "0")
    monkeypatch.chdir(tmp_path)
    for name in ("RUNYARD_RUN_ID", "RUNYARD_DB", "RUNYARD_SERVER", "RUNYARD_CAPTURED"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(InvalidArgument, match="invalid config key"):
        runyard.init(project="p", config={key: 1})
    run = runyard.init(project="p")
    try:
        with pytest.raises(InvalidArgument, match="invalid metric name"):
            run.log({key: 1.0})
        with pytest.raises(InvalidArgument, match="invalid summary key"):
            run.summary[key] = 1.0
        with pytest.raises(InvalidArgument, match="invalid config key"):
            run.config[key] = 1
    finally:
        run.finish(wait=False)
