"""The content-addressed artifact store: dedup, atomic writes, and every path that must be refused.

What both backends promise runs on both: the disk store and the S3 store on a real S3 server
(SeaweedFS, ``tests/s3server.py``); what only the disk has (object files, modes) on the disk alone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from runyard.errors import ArtifactPathError, NotFound
from runyard.store.artifacts import ArtifactStore, open_artifacts, validate_relpath
from runyard.store.disk_artifacts import DiskArtifacts


@pytest.fixture
def arts(tmp_path: Path) -> DiskArtifacts:
    a = DiskArtifacts(tmp_path / "store")
    a.ensure()
    return a


@pytest.fixture(params=["disk", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """An empty store of each backend, opened as runyard opens the configured one."""
    if request.param == "disk":
        a = open_artifacts(tmp_path / "store")
    else:
        from tests.conftest import S3Server

        server: S3Server = request.getfixturevalue("s3_server")
        a = open_artifacts(request.getfixturevalue("s3_location"), s3_endpoint=server.endpoint,
                           scratch=tmp_path / "scratch")
    a.ensure()
    return a


def reopened(store: ArtifactStore, tmp_path: Path) -> ArtifactStore:
    """The same store as another process sees it (nothing remembered in memory)."""
    endpoint = getattr(store, "endpoint", None)
    return open_artifacts(store.location, s3_endpoint=endpoint, scratch=tmp_path / "other-scratch")


def leftovers(store: ArtifactStore) -> list[Path]:
    return [p for p in store.scratch.iterdir() if p.is_file()] if store.scratch.exists() else []


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


BAD_PATHS = {
    "../escape": "'..' segment",
    "a/../../etc/passwd": "'..' segment",
    "a/..": "'..' segment",
    "./a": "'.' segment",
    "/etc/passwd": "absolute",
    "//proc/self/root": "absolute",
    "C:/Windows/win.ini": "absolute",
    "c:evil": "absolute",
    "..\\escape": "backslash",
    "a\\b": "backslash",
    "a\x00b": "NUL",
    "a\nb": "control character",
    "file:///etc/passwd": "looks like a URL",
    "s3://bucket/key": "looks like a URL",
    "a//b": "empty segment",
    "dir/": "empty segment",
    "": "empty",
    "x" * 1025: "longer than",
}


@pytest.mark.parametrize("path", list(BAD_PATHS), ids=[repr(p[:20]) for p in BAD_PATHS])
def test_bad_paths_are_refused_with_a_clear_error(path: str) -> None:
    with pytest.raises(ArtifactPathError, match=BAD_PATHS[path]):
        validate_relpath(path)


@pytest.mark.parametrize("path", ["model.pt", "outputs/ckpt/step-100.pt", "a b/c%2e%2e.txt", "..hidden", "a.."])
def test_ordinary_paths_are_accepted(path: str) -> None:
    assert validate_relpath(path) == path


def test_identical_content_is_stored_once(store: ArtifactStore, tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"weights" * 1000)
    a = store.put_file(f)
    b = store.put_bytes(b"weights" * 1000)
    assert a == b and a.sha256 == hashlib.sha256(b"weights" * 1000).hexdigest() and a.size == 7000
    assert [(sha, size) for sha, size, _ in store.objects()] == [(a.sha256, 7000)]
    assert store.read_bytes(a.content_ref) == b"weights" * 1000
    assert store.size(a.sha256) == 7000 and store.has(a.sha256) and store.exists(a.content_ref)
    assert leftovers(store) == []  # no temporary file left behind


def test_missing_content_and_source_are_reported(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="missing from"):
        store.open("sha256:" + "0" * 64)
    with pytest.raises(NotFound, match="no such file"):
        store.put_file(tmp_path / "absent")
    assert not store.has("0" * 64) and store.size("0" * 64) is None
    assert not store.has("../../etc/passwd") and store.has_many(["../x", "0" * 64]) == set()


def test_has_many_answers_for_a_mix_of_objects_packed_files_and_absent_ones(
        store: ArtifactStore, tmp_path: Path) -> None:
    singles = [store.put_bytes(f"single {i}".encode()).sha256 for i in range(3)]
    sources = []
    for i in range(5):
        (tmp_path / f"p{i}").write_text(f"packed {i}")
        sources.append(tmp_path / f"p{i}")
    packed = [b.sha256 for b in store.put_pack(sources)]
    absent = [hashlib.sha256(f"absent {i}".encode()).hexdigest() for i in range(4)]
    assert store.has_many(singles + packed + absent) == set(singles + packed)
    assert reopened(store, tmp_path).has_many(singles + packed + absent) == set(singles + packed)


def test_a_stored_file_reads_back_in_ranges_and_removes(store: ArtifactStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    blob = store.put_bytes(data)
    with reopened(store, tmp_path).open(blob.content_ref) as f:
        assert f.seek(0, 2) == len(data)
        f.seek(1000)
        assert f.read(10) == data[1000:1010]
        f.seek(len(data) - 5)
        assert f.read() == data[-5:]
    assert store.remove(blob.sha256) == len(data)
    assert not reopened(store, tmp_path).has(blob.sha256) and store.remove(blob.sha256) == 0


def test_an_object_symlinked_out_of_the_store_is_not_read(arts: DiskArtifacts, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("private")
    sha = hashlib.sha256(b"private").hexdigest()
    (arts.root / "objects" / sha[:2]).mkdir()
    (arts.root / "objects" / sha[:2] / sha[2:]).symlink_to(secret)
    with pytest.raises(ArtifactPathError, match="symlink leading out"):
        arts.read_bytes(f"sha256:{sha}")


def test_a_store_directory_symlinked_elsewhere_is_not_written(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    arts = DiskArtifacts(tmp_path / "store")
    arts.ensure()
    (arts.root / "tmp").rmdir()
    (arts.root / "tmp").symlink_to(outside)
    with pytest.raises(ArtifactPathError, match="symlink leading out"):
        arts.put_bytes(b"x")
    assert list(outside.iterdir()) == []


def test_export_never_writes_through_a_symlink(store: ArtifactStore, tmp_path: Path) -> None:
    arts = store
    blob = arts.put_bytes(b"checkpoint")
    dest, outside = tmp_path / "dest", tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("unchanged")
    before = snapshot(outside)
    dest.mkdir()
    (dest / "link").symlink_to(outside)
    (dest / "file-link").symlink_to(outside / "keep.txt")
    with pytest.raises(ArtifactPathError, match="symlink"):
        arts.export(blob.content_ref, dest, "link/keep.txt")
    with pytest.raises(ArtifactPathError, match="symlink"):
        arts.export(blob.content_ref, dest, "file-link")
    for bad in ("../outside/keep.txt", "/tmp/x", "a\\..\\b"):
        with pytest.raises(ArtifactPathError):
            arts.export(blob.content_ref, dest, bad)
    assert snapshot(outside) == before
    assert arts.export(blob.content_ref, dest, "ckpt/model.pt").read_bytes() == b"checkpoint"


def test_a_logged_directory_cannot_smuggle_files_through_symlinks(store: ArtifactStore, tmp_path: Path) -> None:
    arts = store
    src = tmp_path / "outputs"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("a")
    (src / "inner-link").symlink_to(src / "sub" / "a.txt")  # inside: followed
    stored = dict(arts.put_tree(src))
    assert sorted(stored) == ["inner-link", "sub/a.txt"]
    assert stored["inner-link"] == stored["sub/a.txt"]
    (src / "escape").symlink_to("/etc")
    with pytest.raises(ArtifactPathError, match="outside"):
        arts.put_tree(src)


def test_objects_are_read_only_files(arts: DiskArtifacts) -> None:
    blob = arts.put_bytes(b"data")
    path = arts.root / "objects" / blob.sha256[:2] / blob.sha256[2:]
    assert oct(os.stat(path).st_mode & 0o777) == "0o444"


def test_many_files_go_in_as_one_pack_and_read_back_one_by_one(store: ArtifactStore, tmp_path: Path) -> None:
    sources = []
    for i in range(20):
        f = tmp_path / f"f{i}.txt"
        f.write_text(f"content {i % 5}" * (i + 1))
        sources.append(f)
    blobs = store.put_pack(sources)
    assert [b.sha256 for b in blobs] == [hashlib.sha256(s.read_bytes()).hexdigest() for s in sources]
    assert len(list(store.objects())) == 1  # the pack
    assert leftovers(store) == []
    fresh = reopened(store, tmp_path)  # another process: finds them through the index
    assert fresh.pack_members() == {next(iter(store.objects()))[0]: {b.sha256 for b in blobs}}
    for source, blob in zip(sources, blobs, strict=True):
        assert fresh.has(blob.sha256) and fresh.exists(blob.content_ref)
        assert fresh.read_bytes(blob.content_ref) == source.read_bytes()
        assert fresh.size(blob.sha256) == source.stat().st_size
    assert not fresh.has("0" * 64)
    out = fresh.export(blobs[3].content_ref, tmp_path / "dest", "a/b.txt")
    assert out.read_bytes() == sources[3].read_bytes()
    pack = next(iter(store.objects()))[0]
    fresh.remove(pack)  # gc removes a pack with all its files: they are gone, not misread
    assert reopened(store, tmp_path).has_many([b.sha256 for b in blobs]) == set()
