"""The model registry on both engines: versions, aliases, references, and concurrent writers."""

from __future__ import annotations

import threading

import pytest

from runyard.errors import ArtifactPathError, InvalidArgument, NotFound
from runyard.models import ModelRef, resolve_model, verify_digest
from runyard.store.api import NewRun, entries_digest, entries_under
from runyard.store.sql import SqlStore
from runyard.types import RunStatus


def _run_with(store: SqlStore, files: dict[str, str], name: str | None = None) -> int:
    """A finished run whose artifact index holds ``files`` (path -> content sha256)."""
    number = store.create_run(NewRun(project="p", name=name, status=RunStatus.FINISHED)).number
    for path, sha in files.items():
        store.record_artifact(number, path, 10, sha * 64 if len(sha) == 1 else sha, f"sha256:{sha}")
    return number


MODEL_FILES = {"outputs/model/weights.bin": "a", "outputs/model/config.json": "b", "outputs/log.txt": "c"}


def test_register_numbers_versions_and_records_the_pointer(store: SqlStore) -> None:
    run = _run_with(store, MODEL_FILES)
    first = store.register_model("digits", run, "outputs/model/", "first try", "ada")
    second = store.register_model("digits", run, "outputs/model/weights.bin")
    assert (first.version, second.version) == (1, 2)
    assert (first.name, first.run_number, first.run_id) == ("digits", run, store.get_run(run).id)
    assert (first.path, first.file_count, first.size, first.description, first.registered_by) == (
        "outputs/model", 2, 20, "first try", "ada")
    assert (second.path, second.file_count) == ("outputs/model/weights.bin", 1)
    entries = store.list_artifacts(run)
    assert first.digest == entries_digest([("config.json", entries[1]), ("weights.bin", entries[2])])
    assert first.digest != second.digest
    everything = store.register_model("all", run, ".")
    assert (everything.path, everything.file_count) == ("", 3)
    # Another model numbers from 1; the versions list newest first.
    assert [v.version for v in store.model_versions("digits")] == [2, 1]
    assert [m.name for m in store.list_models()] == ["all", "digits"]


def test_the_digest_notices_a_change_under_the_path(store: SqlStore) -> None:
    run = _run_with(store, MODEL_FILES)
    version = store.register_model("digits", run, "outputs/model")
    assert verify_digest(version, store.list_artifacts(run))
    store.record_artifact(run, "outputs/model/weights.bin", 10, "d" * 64, "sha256:d")
    assert not verify_digest(version, store.list_artifacts(run))
    # The pointer itself is immutable: the version still says what it was.
    assert store.model_version("digits", "1").digest == version.digest
    # A file next to the directory, not under it, changes nothing.
    other = store.register_model("other", run, "outputs/model")
    store.record_artifact(run, "outputs/model2", 10, "e" * 64, "sha256:e")
    assert verify_digest(other, store.list_artifacts(run))


def test_a_path_the_run_stored_nothing_under_is_refused(store: SqlStore) -> None:
    run = _run_with(store, MODEL_FILES)
    with pytest.raises(NotFound, match=r"run \d+ has no artifact outputs/mod .*outputs"):
        store.register_model("digits", run, "outputs/mod")
    empty = _run_with(store, {})
    with pytest.raises(NotFound, match="top-level artifacts: none"):
        store.register_model("digits", empty, "")
    with pytest.raises(NotFound, match="no run number 999"):
        store.register_model("digits", 999, "outputs")
    with pytest.raises(ArtifactPathError, match=r"'\.\.' segment"):
        store.register_model("digits", run, "../etc/passwd")
    assert store.list_models() == []  # nothing half-made: no model without a version


@pytest.mark.parametrize("name", ["", "has space", "a/b", "x@y", "model:x", "-lead", "é", "x" * 101])
def test_invalid_model_names_are_refused(store: SqlStore, name: str) -> None:
    run = _run_with(store, MODEL_FILES)
    with pytest.raises(InvalidArgument, match="model name"):
        store.register_model(name, run, "outputs")


def test_aliases_move_and_latest_is_reserved(store: SqlStore) -> None:
    run = _run_with(store, MODEL_FILES)
    store.register_model("digits", run, "outputs/model", aliases=["production", "staging"])
    store.register_model("digits", run, "outputs/log.txt")
    assert store.model_version("digits", "production").version == 1
    moved = store.set_model_alias("digits", "production", 2)
    assert moved.version == 2 and moved.aliases == ("production",)
    assert store.model_version("digits", "production").version == 2
    assert store.model_version("digits", "1").aliases == ("staging",)  # a version may hold many; one left
    assert store.list_models()[0].aliases == {"production": 2, "staging": 1}
    assert store.remove_model_alias("digits", "staging") == 1
    assert store.model_version("digits", "1").aliases == ()
    with pytest.raises(NotFound, match=r"no alias 'staging' \(aliases: production -> 2, latest"):
        store.remove_model_alias("digits", "staging")
    for bad, words in (("latest", "reserved"), ("LATEST", "reserved"), ("3", "only digits"), ("a b", "invalid")):
        with pytest.raises(InvalidArgument, match=words):
            store.set_model_alias("digits", bad, 1)
        with pytest.raises(InvalidArgument, match=words):
            store.register_model("digits", run, "outputs", aliases=[bad])
    assert [v.version for v in store.model_versions("digits")] == [2, 1]  # the refused registrations left none
    with pytest.raises(NotFound, match=r"no version 7 \(versions 1-2\)"):
        store.set_model_alias("digits", "production", 7)


def test_resolve_model_reads_every_reference_form(store: SqlStore) -> None:
    run = _run_with(store, MODEL_FILES)
    store.register_model("digits", run, "outputs/model", aliases=["production"])
    store.register_model("digits", run, "outputs/log.txt")
    assert resolve_model(store, "model:digits").version == 2
    assert resolve_model(store, "model:digits@latest").version == 2
    assert resolve_model(store, "model:digits@1").version == 1
    assert resolve_model(store, "model:digits@01").version == 1
    found = resolve_model(store, "model:digits@production")
    assert (found.version, found.run_number, found.path) == (1, run, "outputs/model")
    assert resolve_model(store, ModelRef("digits", "production")) == found
    with pytest.raises(NotFound, match=r"no model 'mnist' \(models: digits"):
        resolve_model(store, "model:mnist")
    with pytest.raises(NotFound, match=r"no alias 'staging' \(aliases: production -> 1, latest; versions 1-2\)"):
        resolve_model(store, "model:digits@staging")
    with pytest.raises(NotFound, match=r"no version 3 \(versions 1-2\)"):
        resolve_model(store, "model:digits@3")
    for bad in ("digits", "model:", "model:digits@", "model:digits@0", "model:di gits", "model:digits@a b", "12:out"):
        with pytest.raises(InvalidArgument):
            resolve_model(store, bad)


def test_references_print_as_they_parse() -> None:
    assert str(ModelRef.parse("model:digits@production")) == "model:digits@production"
    assert str(ModelRef.parse("model:digits@latest")) == "model:digits"
    assert ModelRef.parse("model:digits@007") == ModelRef("digits", "7")


def test_entries_under_names_a_file_or_a_directory(store: SqlStore) -> None:
    run = _run_with(store, {"m.pt": "a", "m.pt.bak": "b", "m/x": "c"})
    entries = store.list_artifacts(run)
    assert [r for r, _ in entries_under(entries, "m.pt")] == ["m.pt"]
    assert [r for r, _ in entries_under(entries, "m")] == ["x"]
    assert [r for r, _ in entries_under(entries, "")] == ["m.pt", "m.pt.bak", "m/x"]


def test_gc_keeps_a_registered_run(store: SqlStore) -> None:
    kept = _run_with(store, MODEL_FILES)
    gone = _run_with(store, MODEL_FILES)
    store.register_model("digits", kept, "outputs")
    assert store.delete_runs([kept, gone]) == [gone]
    assert store.model_version("digits").run_number == kept


def test_concurrent_registrations_get_distinct_versions(store: SqlStore, db_url: str) -> None:
    from runyard.store.engine import create_engine

    run = _run_with(store, MODEL_FILES)
    threads, each = 6, 5
    start = threading.Barrier(threads)
    made: list[int] = []
    errors: list[BaseException] = []

    def register(index: int) -> None:
        own = SqlStore(create_engine(db_url))  # a connection pool of its own, as another process would have
        try:
            start.wait()
            for _ in range(each):
                made.append(own.register_model("racy", run, "outputs", registered_by=f"t{index}").version)
                own.set_model_alias("racy", "production", made[-1])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            own.close()

    workers = [threading.Thread(target=register, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    assert sorted(made) == list(range(1, threads * each + 1))
    assert [v.version for v in store.model_versions("racy")] == list(range(threads * each, 0, -1))
    assert len(store.list_models()) == 1
    production = store.list_models()[0].aliases["production"]
    assert store.model_version("racy", "production").version == production
