"""Issue 14, item 1: a writer token tried to put a run back in the queue (an ``end`` event naming
``queued``), so the scheduler would start its command a second time beside the first. A run's
records may only say it started and how it ended; every status change goes through one check of
the state machine, whatever the route."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest
from tests.unit.server.conftest import Served

from runyard.errors import Conflict, InvalidArgument
from runyard.ids import new_ulid
from runyard.store.api import IngestBatch, RunPatch
from runyard.store.newrun import NewRun
from runyard.store.tokens import Tokens
from runyard.types import RunStatus

HEADERS = {"content-type": "application/msgpack", "content-encoding": "deflate"}


def send(api: Served, token: str, run_id: str, items: list[Any], writer: str = "w1") -> Any:
    body = zlib.compress(msgpack.packb({"run_id": run_id, "writer": writer, "items": items}), 1)
    return api.client.post("/api/v1/ingest", content=body,
                           headers={**HEADERS, "authorization": f"Bearer {token}"})


def end(seq: int, status: Any, **more: Any) -> list[Any]:
    return [seq, "e", 10.0 + seq, {"event": "end", "status": status, **more}]


def start(seq: int = 0, name: str = "r") -> list[Any]:
    return [seq, "e", 1.0, {"event": "start", "project": "p", "name": name, "config": {}, "labels": [],
                            "notes": "", "command": [], "host": "h", "environment": {}}]


def writer_token(api: Served) -> str:
    _, secret = Tokens(api.store).create("writer", "p-writer", project="p")
    api.client.app.state.policy.tokens_check_interval = 0
    return secret


def launched(api: Served, status: RunStatus, name: str) -> tuple[str, int]:
    """A run as `runyard run` queues it, moved by its agent's routes to ``status``."""
    run_id = new_ulid()
    store = api.store
    run = store.create_run(NewRun(project="p", id=run_id, name=name, status=RunStatus.QUEUED, executor="local"))
    if status is not RunStatus.QUEUED:
        assert store.claim(run.number, [], "agent1", "h") is not None
    if status in (RunStatus.RUNNING, RunStatus.LOST):
        store.update_run(run.number, RunPatch(status=RunStatus.RUNNING))
    if status is RunStatus.LOST:
        assert store.mark_lost(run_id, "its heartbeat stopped")
    assert store.get_run(run.number).status is status
    return run_id, run.number


@pytest.mark.parametrize("was", [RunStatus.LOST, RunStatus.RUNNING, RunStatus.STARTING])
def test_a_writer_token_cannot_requeue_a_run_and_the_scheduler_never_claims_it_again(api: Served,
                                                                                   was: RunStatus) -> None:
    token = writer_token(api)
    run_id, number = launched(api, was, f"twice-{was.value}")
    refused = send(api, token, run_id, [end(5, "queued")])
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]
    assert "end.status" in message and "'queued'" in message
    run = api.store.get_run(number)
    assert run.status is was  # never applied
    assert api.store.claim(number, [], "agent2", "h2") is None  # a second agent finds nothing to start


def test_a_writer_token_cannot_start_a_run_its_agent_never_claimed(api: Served) -> None:
    token = writer_token(api)
    run_id, number = launched(api, RunStatus.QUEUED, "unclaimed")
    refused = send(api, token, run_id, [start(0, "unclaimed")])
    assert refused.status_code == 400, refused.text
    assert "start" in refused.json()["error"] and "queued to running" in refused.json()["error"]
    assert api.store.get_run(number).status is RunStatus.QUEUED


def test_a_writer_token_cannot_end_a_queued_run_without_it_being_started(api: Served) -> None:
    token = writer_token(api)
    run_id, number = launched(api, RunStatus.QUEUED, "not-started")
    refused = send(api, token, run_id, [end(3, "finished", exit_code=0)])
    assert refused.status_code == 400, refused.text
    assert "end.status" in refused.json()["error"] and "queued to finished" in refused.json()["error"]
    assert api.store.get_run(number).status is RunStatus.QUEUED


@pytest.mark.parametrize("status", ["queued", "starting", "running", "lost", "exploded", 7, None])
def test_an_end_event_naming_anything_but_how_a_run_ends_is_refused_with_400(api: Served, status: Any) -> None:
    token = writer_token(api)
    run_id = new_ulid()
    assert send(api, token, run_id, [start(0, "sdk-run")]).status_code == 200
    refused = send(api, token, run_id, [end(1, status)])
    assert refused.status_code == 400, refused.text
    assert "end.status" in refused.json()["error"]
    assert api.store.get_run("sdk-run").status is RunStatus.RUNNING


@pytest.mark.parametrize("final", ["finished", "failed", "stopped", "timeout"])
def test_what_supervisors_and_the_sdk_send_still_ends_a_run(api: Served, final: str) -> None:
    token = writer_token(api)
    run_id, number = launched(api, RunStatus.STARTING, f"ends-{final}")
    # The supervisor's start and end, in one batch as a short command sends them.
    answer = send(api, token, run_id, [start(0, f"ends-{final}"), end(1, final, exit_code=0)])
    assert answer.status_code == 200, answer.text
    assert api.store.get_run(number).status.value == final
    # A lost run's supervisor, cut off for a while, may still say how it ended.
    lost_id, lost_number = launched(api, RunStatus.LOST, f"late-{final}")
    assert send(api, token, lost_id, [end(1, final, exit_code=1)]).status_code == 200
    assert api.store.get_run(lost_number).status.value == final


def test_the_local_path_refuses_a_requeue_as_a_record_to_quarantine(api: Served) -> None:
    # The agent's tailer quarantines records the store refuses with InvalidArgument (a ValueError).
    run_id, number = launched(api, RunStatus.RUNNING, "local")
    batch = IngestBatch(run_id, "w1", 1, 1, end={"status": "queued", "time": 5.0})
    with pytest.raises(InvalidArgument, match=r"end\.status.*running to queued"):
        api.store.ingest(batch)
    assert api.store.get_run(number).status is RunStatus.RUNNING


def test_no_route_moves_an_ended_run_back_or_a_queued_run_to_running(api: Served) -> None:
    store = api.store
    run_id, number = launched(api, RunStatus.RUNNING, "ended")
    store.update_run(number, RunPatch(status=RunStatus.FINISHED))
    for target in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.STARTING):
        with pytest.raises(Conflict):
            store.update_run(number, RunPatch(status=target))
    assert not store.mark_lost(run_id, "late")
    assert store.claim(number, [], "agent", "h") is None
    _, queued = launched(api, RunStatus.QUEUED, "queued")
    with pytest.raises(Conflict, match="queued run cannot become running"):
        store.update_run(queued, RunPatch(status=RunStatus.RUNNING))
    assert store.get_run(number).status is RunStatus.FINISHED


def test_the_sdk_refuses_to_end_a_run_as_queued_as_ingest_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runyard

    monkeypatch.setenv("RUNYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RUNYARD_SYSTEM_INTERVAL", "0")
    monkeypatch.chdir(tmp_path)
    for key in ("RUNYARD_RUN_ID", "RUNYARD_DB", "RUNYARD_SERVER", "RUNYARD_CAPTURED"):
        monkeypatch.delenv(key, raising=False)
    run = runyard.init(project="p", name="sdk-requeue")
    with pytest.raises(InvalidArgument, match=r"finish\(status=...\): 'queued' is not how a run ends"):
        run.finish(status="queued")
    run.finish(status="stopped")
    assert runyard.Api().run("sdk-requeue").status == "stopped"
