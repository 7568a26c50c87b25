"""Reclaiming disk: packs go only with all their files, and environments record their last use."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from runyard.exec import reclaim, venvs
from runyard.store.artifacts import ArtifactStore, open_artifacts
from runyard.store.disk_artifacts import DiskArtifacts


class _Store:
    """The two questions reclaim asks of a store: what runs refer to, and which runs are active."""

    def __init__(self, shas: set[str]) -> None:
        self.shas = shas

    def content_references(self, runs_only: Any = None) -> tuple[set[str], set[str]]:
        return set(self.shas), set()

    def runs_with_status(self, statuses: Any) -> list[Any]:
        return []


def _files(tmp_path: Path, *texts: str) -> list[Path]:
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"f{i}.txt"
        path.write_text(text)
        paths.append(path)
    return paths


@pytest.fixture(params=["disk", "s3"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "disk":
        store = open_artifacts(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("s3_server").endpoint
        store = open_artifacts(request.getfixturevalue("s3_location"), s3_endpoint=endpoint, scratch=tmp_path / "s")
    store.ensure()
    return store


def test_a_pack_is_removed_only_when_none_of_its_files_is_referred_to(
        tmp_path: Path, artifacts: ArtifactStore) -> None:
    kept = artifacts.put_pack(_files(tmp_path, "kept 1", "kept 2"))
    dropped = artifacts.put_pack(_files(tmp_path, "dropped 1", "dropped 2"))
    store = _Store({kept[0].sha256})
    found = reclaim.unreferenced(store, artifacts, since=float("inf"))
    removed = {sha for sha, _ in found}
    assert all(artifacts.has(b.sha256) for b in kept)
    for sha in removed:
        artifacts.remove(sha)
    assert all(artifacts.has(b.sha256) for b in kept)
    assert not any(artifacts.has(b.sha256) for b in dropped)  # the index still names the pack; it is gone
    again = open_artifacts(artifacts.location, s3_endpoint=getattr(artifacts, "endpoint", None),
                           scratch=tmp_path / "again")
    assert not any(again.has(b.sha256) for b in dropped) and again.read_bytes(kept[1].content_ref) == b"kept 2"
    assert {sha for sha, _, _ in again.objects()} == {sha for sha, _, _ in artifacts.objects()}
    assert len(list(again.objects())) == 1  # the kept pack


def test_reusing_an_environment_marks_its_last_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(venvs, "env_key", lambda *args, **kwargs: "k1")
    env = tmp_path / "envs" / "k1"
    env.mkdir(parents=True)
    marker = env / venvs.READY
    marker.write_text("ok\n")
    os.utime(marker, (1_000_000.0, 1_000_000.0))
    assert [p for p, _ in reclaim.stale_environments(tmp_path, 30, now=1_000_000.0 + 31 * 86400)] == [env]
    got, built = venvs.ensure_env(tmp_path, [], None, "python3", [], lambda _: None)
    assert (got, built) == (env, False)
    assert marker.stat().st_mtime > 1_000_000.0 + 86400
    assert reclaim.stale_environments(tmp_path, 30, now=marker.stat().st_mtime + 86400) == []


def test_content_a_snapshot_reuses_is_kept_while_its_run_is_being_queued(tmp_path: Path) -> None:
    # `runyard run` reuses content its hash cache knows without writing it again, stores the new
    # snapshot's manifest, then queues the run: a gc in between must not take the old content.
    from runyard.exec.snapshot import take

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "train.py").write_text("print('old code')\n")
    (tree / "data.bin").write_bytes(os.urandom(2 << 20))  # an object of its own, not packed
    artifacts = DiskArtifacts(tmp_path / "store")
    artifacts.ensure()
    cache = tmp_path / "cache.json"
    take(tree, artifacts, cache)
    long_ago = 1_000_000.0
    for dirpath, _, names in os.walk(artifacts.root / "objects"):
        for name in names:
            os.utime(os.path.join(dirpath, name), (long_ago, long_ago))
    # Nothing refers to the first snapshot (its run was removed, say): all of it may go.
    store = _Store(set())
    assert len(reclaim.unreferenced(store, artifacts, since=long_ago + 1)) == 3  # pack, big file, manifest
    (tree / "notes.md").write_text("a new file\n")
    second = take(tree, artifacts, cache)  # reuses train.py's and data.bin's content from the cache
    found = {sha for sha, _ in reclaim.unreferenced(store, artifacts, since=long_ago + 1)}
    from runyard.exec.snapshot import manifest_of

    needed = {sha for sha, _ in manifest_of(second.id, artifacts).values()}
    packs = artifacts.pack_members()
    holding = {pack for pack, members in packs.items() if members & needed}
    assert holding and not found & (needed | holding)


def test_a_run_directory_frees_only_what_it_does_not_share_with_the_store(tmp_path: Path) -> None:
    shared = tmp_path / "store-object"
    shared.write_bytes(b"x" * 100_000)
    directory = tmp_path / "runs" / "r1"
    (directory / "work").mkdir(parents=True)
    os.link(shared, directory / "work" / "data.bin")  # a big code file, hard-linked from the store
    (directory / "work" / "model.pt").write_bytes(b"y" * 300)

    class Ended:
        def ended_before(self, when: Any) -> list[tuple[int, str]]:
            return [(1, "r1")]

    assert reclaim.finished_run_directories(Ended(), tmp_path, None) == [(directory, 300)]


def test_an_environment_a_running_run_uses_is_never_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A run reused an environment 40 days ago and still runs: `runyard gc --env-days 30` must keep it.
    monkeypatch.setattr(venvs, "env_key", lambda *args, **kwargs: "k2")
    monkeypatch.setattr(venvs, "_IN_USE", [])
    env = tmp_path / "envs" / "k2"
    env.mkdir(parents=True)
    (env / venvs.READY).write_text("ok\n")
    venvs.ensure_env(tmp_path, [], None, "python3", [], lambda _: None)  # this process: the run's supervisor
    later = time.time() + 40 * 86400
    assert reclaim.stale_environments(tmp_path, 30, now=later) == []
    assert not reclaim._remove_environment(env, 30, later) and env.is_dir()
    for held in venvs._IN_USE:
        held.close()  # the run ended
    assert [p for p, _ in reclaim.stale_environments(tmp_path, 30, now=later)] == [env]
    assert reclaim._remove_environment(env, 30, later) and not env.exists()
