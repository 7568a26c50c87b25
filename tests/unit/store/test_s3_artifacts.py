"""What only the S3 store does, against a real S3 server (SeaweedFS): multipart uploads, batched
existence checks, snapshots that upload nothing when nothing changed, damaged or missing objects
and unreachable servers reported in one line."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from tests.s3server import S3Server

from runyard.errors import ArtifactError, NotFound
from runyard.exec.snapshot import materialise, take
from runyard.store import s3_artifacts
from runyard.store.s3_artifacts import HEAD_LIMIT, S3Artifacts

MIB = 1 << 20


def s3_store(s3_server: S3Server, location: str, tmp_path: Path, **options: int) -> S3Artifacts:
    store = S3Artifacts.from_url(location, endpoint=s3_server.endpoint, scratch=tmp_path / "scratch")
    for key, value in options.items():
        setattr(store, key, value)
    store.ensure()
    return store


def bucket_and_key(store: S3Artifacts, sha: str) -> tuple[str, str]:
    return store.bucket, store._object_key(sha)


def test_a_file_over_the_multipart_threshold_goes_up_in_parts_and_comes_back_whole(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    store = s3_store(s3_server, s3_location, tmp_path, multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    big = tmp_path / "checkpoint.bin"
    big.write_bytes(os.urandom(11 * MIB + 123))
    blob = store.put_file(big)
    assert blob.sha256 == hashlib.sha256(big.read_bytes()).hexdigest() and blob.size == 11 * MIB + 123
    bucket, key = bucket_and_key(store, blob.sha256)
    etag = s3_server.client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # three parts: 5 + 5 + 1 MiB
    again = s3_store(s3_server, s3_location, tmp_path)
    out = again.export(blob.content_ref, tmp_path / "dest", "ckpt/model.bin")
    assert out.read_bytes() == big.read_bytes()
    with again.open(blob.content_ref) as f:  # ranged reads: what the server's download route streams
        f.seek(6 * MIB)
        assert f.read(100) == big.read_bytes()[6 * MIB:6 * MIB + 100]
    assert again.requests.get("get_object") == 2  # one ranged GET each, never the object into memory first
    # Storing it again sends nothing: the content is there.
    before = dict(store.requests)
    assert store.put_file(big) == blob
    assert store.requests.get("upload") == before.get("upload") and store.requests.get("put_object") is None
    # Under the threshold (the default 64 MiB) but past what is held in memory: one PUT from a file.
    middle = tmp_path / "middle.bin"
    middle.write_bytes(os.urandom(9 * MIB))
    plain = s3_store(s3_server, s3_location, tmp_path)
    blob = plain.put_file(middle)
    assert plain.requests["upload"] == 1 and "put_object" not in plain.requests
    assert "-" not in s3_server.client().head_object(Bucket=bucket, Key=plain._object_key(blob.sha256))["ETag"]
    assert plain.read_bytes(blob.content_ref) == middle.read_bytes()


def test_many_existence_checks_are_batched_not_one_request_per_object(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = s3_store(s3_server, s3_location, tmp_path)
    stored = [store.put_bytes(f"object {i}".encode()).sha256 for i in range(300)]
    absent = [hashlib.sha256(f"absent {i}".encode()).hexdigest() for i in range(50)]
    fresh = s3_store(s3_server, s3_location, tmp_path)
    assert fresh.has_many(stored + absent) == set(stored)
    assert fresh.requests.get("head_object") is None  # listed, not 350 HEADs
    assert fresh.requests["list_objects_v2"] == 3  # the packs, one shard, then (a small store) all of it
    bigger = s3_store(s3_server, s3_location, tmp_path)
    monkeypatch.setattr(s3_artifacts, "WHOLE_LISTING", 0)  # as if the store were too big to list whole
    assert bigger.has_many(stored + absent) == set(stored)
    shards = len({sha[:2] for sha in stored + absent})
    assert bigger.requests.get("head_object") is None and bigger.requests["list_objects_v2"] == 1 + shards
    few = s3_store(s3_server, s3_location, tmp_path)
    assert few.has_many(stored[:5] + absent[:5]) == set(stored[:5])
    assert few.requests["head_object"] == 10 <= HEAD_LIMIT


def test_in_a_store_too_big_to_list_shard_by_shard_many_checks_fall_back_to_heads(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With millions of objects a shard is many pages: listing every shard a snapshot's files fall in
    # would cost more requests than a HEAD per file. One shard listed tells; the rest go by HEAD.
    monkeypatch.setattr(s3_artifacts, "PAGE", 1)  # every object a page of its own: a "huge" store
    monkeypatch.setattr(s3_artifacts, "WHOLE_LISTING", 0)
    store = s3_store(s3_server, s3_location, tmp_path)
    stored = sorted(store.put_bytes(f"object {i}".encode()).sha256 for i in range(HEAD_LIMIT + 10))
    absent = [hashlib.sha256(f"absent {i}".encode()).hexdigest() for i in range(10)]
    fresh = s3_store(s3_server, s3_location, tmp_path)
    assert fresh.has_many(stored + absent) == set(stored)
    first_shard = min(sha[:2] for sha in stored + absent)
    in_first = [sha for sha in stored if sha[:2] == first_shard]
    outside = [sha for sha in stored + absent if sha[:2] != first_shard]
    assert fresh.requests["head_object"] == len(outside)
    # The packs (one page, empty), then the first shard: a page per object, one when it has none.
    assert fresh.requests["list_objects_v2"] == 1 + max(1, len(in_first))


def test_a_second_snapshot_of_an_unchanged_tree_uploads_nothing(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    tree = tmp_path / "project"
    (tree / "pkg").mkdir(parents=True)
    for i in range(200):
        (tree / "pkg" / f"m{i}.py").write_text(f"X = {i}\n")
    (tree / "weights.bin").write_bytes(os.urandom(MIB + 1))  # big: an object of its own, not packed
    cache = tmp_path / "snapshot-cache.json"
    first_store = s3_store(s3_server, s3_location, tmp_path)
    first = take(tree, first_store, cache)
    assert first.files == 201 and first.new_bytes > MIB
    assert first_store.requests["put_object"] == 4  # the pack, its index, the big file, the manifest
    second_store = s3_store(s3_server, s3_location, tmp_path)  # another `runyard run`, a new process
    second = take(tree, second_store, cache)
    assert second.id == first.id and second.new_bytes == 0
    assert "put_object" not in second_store.requests and "upload" not in second_store.requests
    (tree / "pkg" / "m0.py").write_text("X = 'changed'\n")
    third_store = s3_store(s3_server, s3_location, tmp_path)
    third = take(tree, third_store, cache)
    assert third.id != first.id and third.new_bytes == len("X = 'changed'\n")


def test_a_damaged_or_missing_object_is_an_error_that_names_it(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    store = s3_store(s3_server, s3_location, tmp_path)
    blob = store.put_bytes(b"the real checkpoint")
    bucket, key = bucket_and_key(store, blob.sha256)
    s3_server.client().put_object(Bucket=bucket, Key=key, Body=b"the fake checkpoint")
    fresh = s3_store(s3_server, s3_location, tmp_path)
    with pytest.raises(ArtifactError, match=r"sha256:[0-9a-f]{12}\.\.\. in s3://.* is damaged"):
        fresh.read_bytes(blob.content_ref)
    with pytest.raises(ArtifactError, match="is damaged"):
        fresh.export(blob.content_ref, tmp_path / "dest", "model.bin")
    assert not (tmp_path / "dest" / "model.bin").exists()  # nothing half-written in its place
    s3_server.client().delete_object(Bucket=bucket, Key=key)
    with pytest.raises(NotFound, match="is missing from s3://"):
        s3_store(s3_server, s3_location, tmp_path).open(blob.content_ref)


def test_an_unreachable_server_a_missing_bucket_and_refused_credentials_are_one_line_errors(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = S3Artifacts.from_url("s3://nowhere/x", endpoint="http://127.0.0.1:1", scratch=tmp_path)
    with pytest.raises(ArtifactError) as caught:
        dead.put_bytes(b"x")
    assert "cannot reach s3://nowhere/x (endpoint http://127.0.0.1:1)" in str(caught.value)
    assert "\n" not in str(caught.value)
    no_bucket = S3Artifacts.from_url("s3://no-such-bucket-here/x", endpoint=s3_server.endpoint, scratch=tmp_path)
    with pytest.raises(ArtifactError, match="the bucket 'no-such-bucket-here' does not exist"):
        no_bucket.check()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    refused = S3Artifacts.from_url(s3_location, endpoint=s3_server.endpoint, scratch=tmp_path)
    with pytest.raises(ArtifactError, match="refused the credentials"):
        refused.put_bytes(b"x")


def test_content_stored_again_long_after_it_was_written_is_marked_written_now(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    # As the disk store touches an object stored again: `runyard gc` keeps what was written recently,
    # so a snapshot reusing old content does not lose it before its run is queued.
    store = s3_store(s3_server, s3_location, tmp_path)
    blob = store.put_bytes(b"manifest of an unchanged tree")
    bucket, key = bucket_and_key(store, blob.sha256)
    written = s3_server.client().head_object(Bucket=bucket, Key=key)["LastModified"]
    time.sleep(1.1)
    recent = s3_store(s3_server, s3_location, tmp_path)
    recent.put_bytes(b"manifest of an unchanged tree")  # written a second ago: left alone
    assert "copy_object" not in recent.requests and "put_object" not in recent.requests
    assert s3_server.client().head_object(Bucket=bucket, Key=key)["LastModified"] == written
    old = s3_store(s3_server, s3_location, tmp_path, refresh_after=1)
    old.put_bytes(b"manifest of an unchanged tree")
    assert old.requests["copy_object"] == 1 and "put_object" not in old.requests
    assert s3_server.client().head_object(Bucket=bucket, Key=key)["LastModified"] > written
    assert old.read_bytes(blob.content_ref) == b"manifest of an unchanged tree"


def test_a_snapshot_is_materialised_with_a_few_requests_not_one_per_file(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    tree = tmp_path / "project"
    tree.mkdir()
    for i in range(200):
        (tree / f"m{i}.py").write_text(f"X = {i}\n")
    snap = take(tree, s3_store(s3_server, s3_location, tmp_path), tmp_path / "cache.json")
    elsewhere = S3Artifacts.from_url(s3_location, endpoint=s3_server.endpoint, scratch=tmp_path / "node")  # a new node
    work = tmp_path / "work"
    materialise(snap.id, elsewhere, work)
    assert sorted(p.name for p in work.iterdir()) == sorted(p.name for p in tree.iterdir())
    assert (work / "m7.py").read_text() == "X = 7\n"
    # the manifest (HEAD, GET), the packs listed, their index and the pack itself: one GET for 200 files
    assert sum(elsewhere.requests.values()) <= 6, elsewhere.requests


def test_without_boto3_the_error_says_which_extra_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "boto3", None)  # as if it were not installed
    store = S3Artifacts.from_url("s3://bucket/prefix", endpoint="http://127.0.0.1:1", scratch=tmp_path)
    with pytest.raises(ArtifactError, match=r"needs boto3, which is not installed: pip install 'runyard\[s3\]'"):
        store.has("0" * 64)


def test_what_a_long_lived_process_knows_is_stored_is_asked_again_after_a_while(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server remembers what it stored, but not forever: content another process removed (gc) is
    # soon reported missing again, so a client uploads it instead of referring to nothing.
    store = s3_store(s3_server, s3_location, tmp_path)
    blob = store.put_bytes(b"uploaded once")
    bucket, key = bucket_and_key(store, blob.sha256)
    s3_server.client().delete_object(Bucket=bucket, Key=key)  # removed by another process
    assert store.has(blob.sha256)  # remembered: no request
    monkeypatch.setattr(s3_artifacts, "KNOWN_FOR", 0.0)
    assert not store.has(blob.sha256) and store.size(blob.sha256) is None


def test_a_snapshots_big_file_is_told_part_by_part_as_it_goes_up(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    # What `runyard run` draws its progress bar from: bytes sent, as each part of a multipart upload
    # is sent, not once the file is hashed (the fast part) or only at the end.
    store = s3_store(s3_server, s3_location, tmp_path, multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    (project / "weights.bin").write_bytes(os.urandom(16 * MIB))
    told: list[tuple[int, int]] = []
    cache = tmp_path / "snapshot-cache.json"
    snap = take(project, store, cache, progress=lambda done, total: told.append((done, total)))
    total = 16 * MIB + len("print('hi')\n")
    assert told[0] == (0, total) and told[-1] == (total, total)
    assert all(t == total for _, t in told)
    assert [d for d, _ in told] == sorted(d for d, _ in told)  # only forward
    during = [d for d, _ in told if 0 < d < total]
    assert len(during) >= 3, told  # one step per part at least: 5 + 5 + 5 + 1 MiB
    assert snap.new_bytes == total
    # Unchanged, nothing is sent: the bar has nothing to show.
    told.clear()
    take(project, store, cache, progress=lambda done, total: told.append((done, total)))
    assert told == []


def test_local_pack_copies_are_kept_within_their_bound_least_lately_used_first(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every snapshot that changed leaves a pack; a machine that launched for months must not keep
    # them all. Past the bound the copies used least lately go, and are fetched again when needed.
    monkeypatch.setattr(s3_artifacts, "PACK_CACHE_BYTES", 3 * MIB)
    store = s3_store(s3_server, s3_location, tmp_path)
    packs = []
    for n in range(5):
        files = []
        for i in range(4):
            f = tmp_path / f"src{n}" / f"f{i}.bin"
            f.parent.mkdir(exist_ok=True)
            f.write_bytes(os.urandom(256 << 10))
            files.append(f)
        packs.append((files, store.put_pack(files)))
        time.sleep(0.02)  # modification times apart
    cache = store._pack_cache()

    def kept() -> int:
        return sum(p.stat().st_size for p in cache.iterdir() if not p.name.startswith("."))

    assert kept() <= 3 * MIB + MIB  # the bound, plus the pack just written
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) < 5
    # The first pack's copy is gone; its files are still read whole, from S3, by another process.
    first_files, first_blobs = packs[0]
    again = s3_store(s3_server, s3_location, tmp_path)
    for f, blob in zip(first_files, first_blobs, strict=True):
        assert again.read_bytes(blob.content_ref) == f.read_bytes()
    assert kept() <= 3 * MIB + MIB


def test_a_checkpoint_upload_cut_short_is_resumed_not_sent_again_whole(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A node dies, a supervisor is killed or the network drops while a big checkpoint goes up: the
    # next attempt (the next pass over the outputs, or another process) sends only what is missing.
    big = tmp_path / "checkpoint.pt"
    big.write_bytes(os.urandom(21 * MIB + 7))  # five parts of 5 MiB: 5 + 5 + 5 + 5 + 1
    sha = hashlib.sha256(big.read_bytes()).hexdigest()
    cut = s3_store(s3_server, s3_location, tmp_path, multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    send = cut._call

    def network_drops_after_two_parts(operation: str, what: str, **kwargs: object) -> object:
        if operation == "upload_part" and int(kwargs["PartNumber"]) > 2:  # type: ignore[call-overload]
            raise ArtifactError(f"{what}: cannot reach the S3 server")
        return send(operation, what, **kwargs)

    monkeypatch.setattr(cut, "_call", network_drops_after_two_parts)
    with pytest.raises(ArtifactError, match="part"):
        cut.put_file(big)
    assert not s3_store(s3_server, s3_location, tmp_path).has(sha)
    # A part under way whose bytes are not the file's (it cannot be trusted) is sent again.
    bucket, key = bucket_and_key(cut, sha)
    client = s3_server.client()
    upload_id = client.list_multipart_uploads(Bucket=bucket, Prefix=key)["Uploads"][0]["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=4, Body=os.urandom(5 * MIB))
    again = s3_store(s3_server, s3_location, tmp_path, multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    told: list[int] = []
    blob = again.put_file(big, progress=told.append)
    assert blob.sha256 == sha
    assert again.requests["upload_part"] == 3  # parts 3, 4 (wrong bytes) and 5; not 1 and 2
    assert "create_multipart_upload" not in again.requests
    assert sum(told) == big.stat().st_size  # the bar starts where the last attempt stopped
    assert client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"').endswith("-5")
    assert s3_store(s3_server, s3_location, tmp_path).read_bytes(blob.content_ref) == big.read_bytes()
    assert client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) == []


def test_gc_aborts_uploads_nobody_came_back_to_finish(
        s3_server: S3Server, s3_location: str, tmp_path: Path) -> None:
    # An upload whose sender went for good keeps its parts (and the bill) until someone aborts it.
    store = s3_store(s3_server, s3_location, tmp_path)
    client = s3_server.client()
    key = store._object_key(hashlib.sha256(b"never finished").hexdigest())
    upload_id = client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1000)
    assert store.unfinished(time.time() - 3600, remove=True) == []  # begun within the grace: kept
    # Begun before the cut-off but resumed since: someone is finishing it, kept.
    time.sleep(2.1)
    between = time.time()
    time.sleep(1.1)
    client.upload_part(Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=b"y" * 10)
    assert store.unfinished(between, remove=True) == []
    client.abort_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload_id)
    upload_id = client.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=store.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1000)
    found = store.unfinished(time.time() + 60, remove=False)  # a dry run names it and keeps it
    assert [(name.split(" ")[0], size) for name, size in found] == [(key, 1000)]
    assert len(client.list_multipart_uploads(Bucket=store.bucket, Prefix=key).get("Uploads", [])) == 1
    assert len(store.unfinished(time.time() + 60, remove=True)) == 1
    assert client.list_multipart_uploads(Bucket=store.bucket, Prefix=key).get("Uploads", []) == []
    # A server on this store gathers pieces of uploads in its scratch directory: those go too, and
    # nothing else there (it may be the machine's temporary directory).
    piece, other = store.scratch / "partial-0123abcd", store.scratch / "someone-elses-file"
    piece.write_bytes(b"p" * 100)
    other.write_bytes(b"o")
    assert store.unfinished(time.time() + 60, remove=True) == [("partial-0123abcd", 100)]
    assert not piece.exists() and other.exists()


def test_credentials_that_may_not_list_uploads_under_way_still_upload_and_gc_still_runs(
        s3_server: S3Server, s3_location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Minimal IAM policies grant PutObject but not s3:ListBucketMultipartUploads: resuming is then
    # not possible, uploading must still be.
    store = s3_store(s3_server, s3_location, tmp_path, multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    send = store._call

    def refused_listings(operation: str, what: str, **kwargs: object) -> object:
        if operation in ("list_multipart_uploads", "list_parts"):
            raise ArtifactError(f"{what}: refused the credentials (AccessDenied)")
        return send(operation, what, **kwargs)

    monkeypatch.setattr(store, "_call", refused_listings)
    big = tmp_path / "model.bin"
    big.write_bytes(os.urandom(11 * MIB))
    blob = store.put_file(big)
    assert store.requests["upload_part"] == 3
    assert s3_store(s3_server, s3_location, tmp_path).read_bytes(blob.content_ref) == big.read_bytes()
    assert store.unfinished(time.time() + 60, remove=True) == []  # said in the log, not a failure


def test_content_past_ten_thousand_parts_goes_up_in_bigger_parts() -> None:
    # S3 takes at most 10,000 parts: at 16 MiB a part, content past 156 GiB needs bigger ones, the
    # same for every attempt at the same content (a resumed upload cuts the same parts).
    store = S3Artifacts("bucket")
    for size in (1 << 30, 156 << 30, 157 << 30, 5 << 40):
        part = store._part_size(size)
        assert part >= store.multipart_chunk and part % MIB == 0 and -(-size // part) <= 10_000
    assert store._part_size(1 << 30) == store.multipart_chunk
