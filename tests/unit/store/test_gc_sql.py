"""What `runyard gc` and `runyard rm` ask of the store, on both engines."""

from __future__ import annotations

from runyard.store.api import LogLine, NewRun, RunInput, RunPatch
from runyard.store.sql import SqlStore
from runyard.types import RunStatus

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def _finished(store: SqlStore, ended_at: float, **new: object) -> int:
    number = store.create_run(NewRun(project="p", **new)).number  # type: ignore[arg-type]
    store.update_run(number, RunPatch(status=RunStatus.FINISHED, exit_code=0, ended_at=ended_at))
    return number


def test_references_cover_artifacts_inputs_snapshots_and_diffs(store: SqlStore) -> None:
    one = _finished(store, 100.0, snapshot_id=f"sha256:{A}", git_diff_ref=f"sha256:{B}")
    two = _finished(store, 200.0)
    store.record_artifact(two, "outputs/model.pt", 3, C, f"sha256:{C}")
    store.add_input(two, RunInput(kind="artifact", sha256=D, source_run=one, source_path="x"))
    shas, snapshots = store.content_references()
    assert shas == {A, B, C, D} and snapshots == {f"sha256:{A}"}
    assert store.content_references([two]) == ({C, D}, set())
    assert [n for n, _ in store.ended_before(150.0)] == [one]
    assert [n for n, _ in store.ended_before(None)] == [one, two]


def test_a_queued_runs_mounts_are_references_before_it_records_inputs(store: SqlStore) -> None:
    # `runyard run --mount 5:u.txt:in.txt` queued behind a busy slot; `runyard rm 5` must keep u.txt.
    E = "e" * 64
    mount = {"kind": "artifact", "target": "in.txt", "source": "u.txt", "run": 5, "files": [["u.txt", E]]}
    queued = store.create_run(NewRun(project="p", status=RunStatus.QUEUED,
                                     launch={"argv": ["true"], "mounts": [mount]}))
    shas, _ = store.content_references()
    assert E in shas
    assert E in store.content_references([queued.number])[0]


def test_deleting_runs_takes_their_records_and_refuses_active_ones(store: SqlStore) -> None:
    done = _finished(store, 100.0)
    store.append_logs(done, [LogLine(1.0, "hello")])
    store.record_artifact(done, "a.txt", 1, C, f"sha256:{C}")
    child = _finished(store, 100.0, parent=done)
    running = store.create_run(NewRun(project="p")).number
    assert store.delete_runs([done, running]) == [done]
    assert {r.number for r in store.runs_with_status([RunStatus.RUNNING, RunStatus.FINISHED])} == {child, running}
    assert store.get_run(child).parent is None
    assert store.content_references() == (set(), set())
