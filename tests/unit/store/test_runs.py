"""Runs in the store, on both engines: numbers, references, listing, sorting, cursors, changes."""

from __future__ import annotations

import math

import pytest

from runyard.errors import Ambiguous, Conflict, InvalidArgument, NotFound
from runyard.store.api import AlertEvent, AlertRule, LogLine, NewRun, RunInput, RunPatch, RunQuery
from runyard.store.sql import SqlStore
from runyard.types import RunStatus


def test_numbers_are_sequential_and_ids_sortable(store: SqlStore) -> None:
    runs = [store.create_run(NewRun(project="p")) for _ in range(3)]
    assert [r.number for r in runs] == [1, 2, 3]
    assert [r.id for r in runs] == sorted(r.id for r in runs) and all(len(r.id) == 26 for r in runs)
    assert runs[0].status is RunStatus.RUNNING and runs[0].started_at is not None


def test_a_run_keeps_what_it_was_created_with(store: SqlStore) -> None:
    parent = store.create_run(NewRun(project="gan", name="baseline"))
    run = store.create_run(NewRun(
        project="gan", name="wider", status=RunStatus.QUEUED, command=["python", "train.py", "--lr", "0.1"],
        config={"lr": 0.1, "layers": [64, 64], "opt": {"name": "adam"}}, labels=["b", "a", "a"],
        notes="# Wider\nmore units", resources={"gpus": 1}, priority=5, parent=parent.number,
        git_commit="abc123", git_branch="main", environment={"python": "3.11"},
    ))
    got = store.get_run(run.number)
    assert got == run
    assert got.labels == ("a", "b") and got.status is RunStatus.QUEUED and got.queued_at is not None
    assert got.config == {"lr": 0.1, "layers": [64, 64], "opt": {"name": "adam"}}
    assert got.parent == parent.number and got.project == "gan"
    assert [c.number for c in store.children_of(parent.number)] == [run.number]


def test_a_nul_in_json_values_is_kept_as_u_fffd_on_both_engines(store: SqlStore) -> None:
    # PostgreSQL's JSON refuses NUL (the whole run was refused); SQLite kept it. Both keep U+FFFD.
    run = store.create_run(NewRun(project="p", config={"note": "a\x00b", "k\x00": ["\x00"], "path": "C:\\u0000"},
                                  environment={"x": "\\\x00"}))
    got = store.get_run(run.number)
    assert got.config == {"note": "a\ufffdb", "k\ufffd": ["\ufffd"], "path": "C:\\u0000"}  # "\\u0000" is text
    assert got.environment == {"x": "\\\ufffd"}


def test_references_by_number_name_and_id_prefix(store: SqlStore) -> None:
    a = store.create_run(NewRun(project="p", name="alpha"))
    store.create_run(NewRun(project="p", name="twin"))
    store.create_run(NewRun(project="p", name="twin"))
    assert store.get_run(str(a.number)).id == a.id
    assert store.get_run("alpha").id == a.id
    assert store.get_run(a.id[:20].lower()).id == a.id
    with pytest.raises(Ambiguous, match="2 runs are named 'twin'"):
        store.get_run("twin")
    with pytest.raises(NotFound, match="no run number 99"):
        store.get_run("99")
    with pytest.raises(NotFound, match="tried number, name and id prefix"):
        store.get_run("zzzz-none")
    with pytest.raises(InvalidArgument):
        store.create_run(NewRun(project="p", name="12"))  # would be read as a number
    with pytest.raises(InvalidArgument):
        store.create_run(NewRun(project="p", name="a/b"))
    with pytest.raises(NotFound, match="parent run 404"):
        store.create_run(NewRun(project="p", parent=404))
    with pytest.raises(Conflict):
        store.create_run(NewRun(project="p", id=a.id))


def _page_numbers(store: SqlStore, **query: object) -> list[int]:
    return [r.number for r in store.list_runs(RunQuery(**query)).items]  # type: ignore[arg-type]


def test_listing_filters_and_sorts_by_summary_with_missing_values_last(store: SqlStore) -> None:
    accs = [0.5, None, 0.9, 0.7, math.nan, 0.9]
    for i, acc in enumerate(accs):
        r = store.create_run(NewRun(project="p" if i < 5 else "q", labels=["even"] if i % 2 == 0 else ["odd"],
                                    config={"lr": 10.0 ** -i}))
        if acc is not None:
            store.update_run(r.number, RunPatch(summary={"acc": acc}))
    assert _page_numbers(store, sort="summary.acc") == [6, 3, 4, 1, 5, 2]  # NaN after numbers, missing last
    assert _page_numbers(store, sort="summary.acc", descending=False)[:4] == [1, 4, 3, 6]
    assert _page_numbers(store, labels=["even"], sort="summary.acc") == [3, 1, 5]
    assert _page_numbers(store, project="q") == [6]
    assert _page_numbers(store, sort="config.lr", descending=False) == [6, 5, 4, 3, 2, 1]
    store.update_run(2, RunPatch(status=RunStatus.FAILED))
    assert _page_numbers(store, status=[RunStatus.FAILED]) == [2]
    with pytest.raises(InvalidArgument, match="cannot sort by 'colour'"):
        store.list_runs(RunQuery(sort="colour"))
    with pytest.raises(InvalidArgument, match="invalid cursor"):
        store.list_runs(RunQuery(cursor="garbage"))


@pytest.mark.parametrize("sort", ["number", "summary.acc", "name"])
def test_cursor_pages_cover_every_run_exactly_once(store: SqlStore, sort: str) -> None:
    for i in range(23):
        r = store.create_run(NewRun(project="p", name=f"r{i % 5}"))
        if i % 3:
            store.update_run(r.number, RunPatch(summary={"acc": float(i % 4)}))
    seen: list[int] = []
    cursor = None
    while True:
        page = store.list_runs(RunQuery(sort=sort, limit=4, cursor=cursor))
        seen += [r.number for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == list(range(1, 24)) and len(seen) == 23
    assert seen == _page_numbers(store, sort=sort, limit=100)


def test_changes_merge_and_status_rules(store: SqlStore) -> None:
    r = store.create_run(NewRun(project="p", config={"a": 1, "b": 2}))
    r = store.update_run(r.number, RunPatch(config={"b": None, "c": 3}, summary={"loss": math.inf},
                                            notes="better", name="renamed"))
    assert r.config == {"a": 1, "c": 3} and r.summary == {"loss": math.inf}
    assert r.notes == "better" and r.name == "renamed"
    r = store.update_run(r.number, RunPatch(status=RunStatus.LOST))
    assert r.ended_at is not None
    r = store.update_run(r.number, RunPatch(status=RunStatus.FINISHED, exit_code=0))  # a late report
    with pytest.raises(Conflict, match="already ended as finished"):
        store.update_run(r.number, RunPatch(status=RunStatus.RUNNING))
    r = store.set_labels(r.number, add=["x", "y"], remove=["y", "z"])
    assert r.labels == ("x",)
    with pytest.raises(InvalidArgument, match="invalid label"):
        store.set_labels(r.number, add=["-bad"])
    with pytest.raises(NotFound):
        store.update_run(999, RunPatch(notes="x"))


def test_projects_count_their_runs(store: SqlStore) -> None:
    store.ensure_project("empty")
    store.create_run(NewRun(project="busy"))
    store.create_run(NewRun(project="busy"))
    assert {p.name: p.run_count for p in store.list_projects()} == {"busy": 2, "empty": 0}


def test_logs_read_in_order_from_a_cursor(store: SqlStore) -> None:
    r = store.create_run(NewRun(project="p")).number
    store.append_logs(r, [LogLine(1.0, f"line {i}", "stderr" if i % 2 else "stdout") for i in range(5)])
    first = store.read_logs(r, limit=2)
    assert [ln.text for ln in first] == ["line 0", "line 1"] and first[1].stream == "stderr"
    rest = store.read_logs(r, after=first[-1].id)
    assert [ln.text for ln in rest] == ["line 2", "line 3", "line 4"]


def test_artifact_index_and_lineage_both_ways(store: SqlStore) -> None:
    maker = store.create_run(NewRun(project="p")).number
    user = store.create_run(NewRun(project="p")).number
    store.record_artifact(maker, "outputs/model.pt", 10, "a" * 64, "sha256:" + "a" * 64)
    store.record_artifact(maker, "outputs/model.pt", 12, "b" * 64, "sha256:" + "b" * 64)  # replaced
    store.record_artifact(maker, "outputs%/x", 1, "c" * 64, "sha256:" + "c" * 64)
    assert [(a.path, a.size) for a in store.list_artifacts(maker, prefix="outputs/")] == [("outputs/model.pt", 12)]
    store.add_input(user, RunInput("artifact", "b" * 64, source_run=maker, source_path="outputs/model.pt",
                                   mount="model.pt"))
    assert [i.source_run for i in store.inputs_of(user)] == [maker]
    assert [i.run for i in store.consumers_of("b" * 64)] == [user]
    assert [i.run for i in store.consumers_of_run(maker)] == [user]


def test_alert_events_stay_unseen_until_marked(store: SqlStore) -> None:
    r = store.create_run(NewRun(project="p")).number
    rule = store.add_alert_rule(AlertRule("loss-nan", "nan", {"metric": "loss"}, action="stop", project="p"))
    assert store.list_alert_rules(project="p")[0].id == rule.id
    e = store.add_alert_event(AlertEvent(r, "nan", "loss became NaN at step 7", 1.0, rule.id, "loss", 7,
                                         math.nan))
    assert [x.id for x in store.list_alert_events(unseen_only=True)] == [e.id]
    store.mark_alerts_seen([e.id])
    assert store.list_alert_events(unseen_only=True) == []
    assert store.list_alert_events(run=r)[0].seen_at is not None


def test_sql_store_implements_the_store_protocol(store: SqlStore) -> None:
    from runyard.store.api import Store

    protocol_methods = {n for n in vars(Store) if not n.startswith("_")}
    assert protocol_methods <= {n for n in dir(SqlStore) if not n.startswith("_")}
    typed: Store = store  # mypy checks the structure; this checks it at run time too
    assert typed.list_projects() == []


def test_a_reference_of_non_ascii_digits_is_not_a_number(store: SqlStore) -> None:
    # Found by schemathesis: "²".isdigit() is true but int("²") raises.
    with pytest.raises(NotFound):
        store.get_run("²")
