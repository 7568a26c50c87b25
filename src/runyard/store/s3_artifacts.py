"""The artifact store on S3 (AWS, or any S3-compatible server such as MinIO or SeaweedFS), through boto3.

Layout under ``s3://bucket/prefix``, content-addressed as on disk:

* ``objects/ab/cdef...``: one object per stored blob, keyed by its SHA-256;
* ``packs/<pack sha256>.<index sha256[:16]>``: the index of a pack (an object holding many small
  files: a snapshot's thousand files are one PUT, not a thousand), one line ``sha offset size`` per
  file. A pack's files are stored exactly as long as an index of it is listed: ``remove`` deletes
  the indexes before the pack. Indexes never change, so each is fetched once and cached in
  ``scratch``.

Existence checks are batched (``has_many``): packed files are answered from the listed indexes; the
rest by HEAD requests in a thread pool when they are few; when many, a small store is listed whole,
a bigger one by the shards they fall in (while the listings take fewer requests than the HEADs
would: a huge store has many pages a shard).
Large files go up in multipart uploads (``TransferConfig``). Reads stream: ``open`` returns a
seekable file that issues ranged GETs as it is read, never a whole object in memory. Whole reads
(``read_bytes``, ``export``) check the content against its SHA-256, so a damaged object is an error
that names it, never silently wrong bytes.

boto3 is imported only inside the functions that talk to S3, so choosing this backend costs
nothing until the first request.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

from runyard.errors import ArtifactError, NotFound
from runyard.files import place
from runyard.store.artifacts import CHUNK, PARTIAL_PREFIX, SHA, Blob, Stored, put_file_with, sha_of_ref, stale_files
from runyard.store.disk_artifacts import walk_tree

MIB = 1 << 20
#: S3's most parts in one multipart upload.
MAX_PARTS = 10_000
#: Files of this size or more go up in parts (each ``MULTIPART_CHUNK`` bytes), several at a time.
MULTIPART_THRESHOLD = 64 << 20
MULTIPART_CHUNK = 16 << 20
#: Content smaller than this is read into memory and sent in one PUT; bigger goes through ``scratch``.
IN_MEMORY = 8 << 20
#: Requests in flight at once (HEADs, listings, parts).
CONCURRENCY = 16
#: Up to this many unknown objects are checked by HEAD; more by listing their shards.
HEAD_LIMIT = 64
#: Seconds an object this process stored or saw is taken as present without asking S3 again.
KNOWN_FOR = 60.0
#: Objects a listing request returns at most (S3's own limit).
PAGE = 1000
#: A store estimated (from one shard) at up to this many pages of PAGE objects is listed whole
#: (pages one after another) rather than shard by shard (all 256 at worst, 16 at a time).
WHOLE_LISTING = 8
#: Bytes of local pack copies this machine keeps (``scratch/../s3-packs``): past it, the copies
#: used least lately go (each is fetched again if a run needs it).
PACK_CACHE_BYTES = 1 << 30
#: Seconds: content stored again whose object was last written longer ago is written again in place
#: (a copy onto itself), so that `runyard gc`, which keeps what was written recently, keeps it.
REFRESH_AFTER = 600.0

_T = TypeVar("_T")
log = logging.getLogger(__name__)


class S3Artifacts:
    """Content-addressed blobs in ``s3://bucket/prefix``; identical content is stored once."""

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 scratch: Path | None = None, multipart_threshold: int = MULTIPART_THRESHOLD,
                 multipart_chunk: int = MULTIPART_CHUNK) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self._scratch = Path(scratch) if scratch is not None else Path(tempfile.gettempdir())
        self.multipart_threshold = multipart_threshold
        self.multipart_chunk = multipart_chunk
        self._client: Any = None
        self._lock = threading.Lock()
        self._counting = threading.Lock()
        #: Objects this process stored or saw lately: sha -> (size, time.monotonic() then). An answer
        #: for has() for KNOWN_FOR seconds: a long-lived process (the server) asks S3 again after
        #: that, so content another process removed (runyard gc) is not taken as present for long.
        self._known: dict[str, tuple[int, float]] = {}
        #: When objects seen by HEAD were last written (time.time() seconds).
        self._written: dict[str, float] = {}
        self.refresh_after = REFRESH_AFTER
        #: File sha -> (pack sha, offset, size), from the indexes listed by the last _load_packs.
        self._packed: dict[str, tuple[str, int, int]] = {}
        self._indexes: dict[str, list[tuple[str, int, int]]] = {}
        self._packs_loaded = 0.0
        #: Requests sent, by operation: tests and the benchmark read it.
        self.requests: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str, *, endpoint: str | None = None, scratch: Path | None = None) -> S3Artifacts:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ArtifactError(f"not an S3 location: {url!r} (expected s3://BUCKET/PREFIX)")
        return cls(bucket, prefix, endpoint=endpoint, scratch=scratch)

    # -- where things are -----------------------------------------------------------------------------

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def scratch(self) -> Path:
        return self._scratch

    def _key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def _object_key(self, sha: str) -> str:
        return self._key("objects", sha[:2], sha[2:])

    def _where(self) -> str:
        return f"{self.location} (endpoint {self.endpoint})" if self.endpoint else self.location

    def ensure(self) -> None:
        self._scratch.mkdir(parents=True, exist_ok=True)

    # -- talking to S3 --------------------------------------------------------------------------------

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                _require_boto3(self.location)
                import boto3
                from botocore.config import Config

                session = boto3.session.Session()
                config = Config(max_pool_connections=CONCURRENCY * 2, connect_timeout=5, read_timeout=60,
                                retries={"max_attempts": 3, "mode": "standard"},
                                s3={"addressing_style": "path"} if self.endpoint else {})
                self._client = session.client("s3", endpoint_url=self.endpoint, config=config,
                                              region_name=session.region_name or "us-east-1")
            return self._client

    def _call(self, operation: str, what: str, **kwargs: Any) -> Any:
        """One request, its failures turned into runyard's errors (one line, naming the store)."""
        self._count(operation)
        with self._translate(what):
            return getattr(self.client(), operation)(Bucket=self.bucket, **kwargs)

    def _count(self, operation: str) -> None:
        with self._counting:  # requests are sent from a pool of threads
            self.requests[operation] = self.requests.get(operation, 0) + 1

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        _require_boto3(self.location)
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        try:
            yield
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("404", "NoSuchKey", "NotFound", "NoSuchUpload"):
                raise NotFound(f"{what}: no such object in {self._where()}") from None
            if code == "NoSuchBucket":
                raise ArtifactError(f"{what}: the bucket {self.bucket!r} does not exist at {self._where()}; "
                                    "create it, or set artifacts to one that does") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise ArtifactError(f"{what}: {self._where()} refused the credentials ({code}); check "
                                    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None
            raise ArtifactError(f"{what}: {self._where()} answered {status} {code}") from None
        except NoCredentialsError:
            raise ArtifactError(f"{what}: no AWS credentials for {self.location}; set AWS_ACCESS_KEY_ID and "
                                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE") from None
        except EndpointConnectionError:
            raise ArtifactError(f"{what}: cannot reach {self._where()}; is the S3 server running, and "
                                "s3_endpoint right?") from None
        except BotoCoreError as e:
            raise ArtifactError(f"{what}: {self._where()}: {e}") from None

    def _parallel(self, fn: Callable[[str], _T], items: list[str]) -> list[_T]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(min(CONCURRENCY, len(items)), thread_name_prefix="runyard-s3") as pool:
            return list(pool.map(fn, items))

    def check(self) -> None:
        """Raise ``ArtifactError`` saying what is wrong unless the bucket answers (``runyard doctor``)."""
        try:
            self._call("head_bucket", "checking the bucket")
        except NotFound:  # HEAD answers a bare 404, with no error code to tell a bucket from a key
            raise ArtifactError(f"the bucket {self.bucket!r} does not exist at {self._where()}; create it, or set "
                                "artifacts to one that does") from None

    # -- existence ------------------------------------------------------------------------------------

    def has(self, sha256: str) -> bool:
        return sha256 in self.has_many([sha256])

    def exists(self, content_ref: str) -> bool:
        return self.has(sha_of_ref(content_ref))

    def has_many(self, shas: Iterable[str]) -> set[str]:
        wanted = {sha for sha in shas if SHA.match(sha)}
        found = {sha for sha in wanted if self._known_size(sha) is not None}
        rest = wanted - found
        if rest:
            self._load_packs()
            packed = {sha for sha in rest if sha in self._packed}
            found |= packed
            rest -= packed
        if len(rest) > HEAD_LIMIT:
            # Many: list the shards they fall in, while that costs fewer requests than a HEAD each. One
            # shard listed first tells how big shards are (a big store has pages of them).
            shards = sorted({sha[:2] for sha in rest})
            first = self._list_shard(shards[0], rest, found)
            pages = len(first) // PAGE + 1
            if len(first) * 256 <= WHOLE_LISTING * PAGE:  # a small store: its whole listing is a few pages
                self._list_shard("", rest, found)
                return found
            if pages * (len(shards) - 1) <= len(rest):
                self._parallel(lambda shard: self._list_shard(shard, rest, found), shards[1:])
                return found
            rest = {sha for sha in rest if sha[:2] != shards[0]}
        if rest:
            ordered = sorted(rest)
            found |= {sha for sha, size in zip(ordered, self._parallel(self._head, ordered), strict=True)
                      if size is not None}
        return found

    def _list_shard(self, shard: str, wanted: set[str], found: set[str]) -> list[tuple[str, int, float]]:
        """List the objects of one shard ("ab"), or of all ("")."""
        listed = self._list(self._key("objects", shard) + "/")
        for key, size, written in listed:
            sha = "".join(key.rsplit("/", 2)[-2:])
            if sha in wanted:
                self._remember(sha, size)
                self._written[sha] = written
                found.add(sha)
        return listed

    def _remember(self, sha: str, size: int) -> None:
        self._known[sha] = (size, time.monotonic())

    def _known_size(self, sha: str) -> int | None:
        known = self._known.get(sha)
        return known[0] if known is not None and time.monotonic() - known[1] < KNOWN_FOR else None

    def _head(self, sha: str) -> int | None:
        try:
            answer = self._call("head_object", f"content {sha[:12]}...", Key=self._object_key(sha))
        except NotFound:
            return None
        size = int(answer["ContentLength"])
        self._remember(sha, size)
        if answer.get("LastModified") is not None:
            self._written[sha] = answer["LastModified"].timestamp()
        return size

    def _refresh(self, sha: str) -> None:
        """Stored again: mark the object written now when it was written long ago, as the disk store
        does (``os.utime``): a snapshot that reuses old content must not lose it to a `runyard gc`
        running before its run is queued. Best effort, like the disk's."""
        written = self._written.get(sha)
        if written is None or time.time() - written < self.refresh_after:
            return
        key = self._object_key(sha)
        with contextlib.suppress(ArtifactError):
            self._call("copy_object", f"refreshing {sha[:12]}...", Key=key, MetadataDirective="REPLACE",
                       CopySource={"Bucket": self.bucket, "Key": key})
            self._written[sha] = time.time()

    def _list(self, prefix: str) -> list[tuple[str, int, float]]:
        out = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix, "MaxKeys": PAGE}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list_objects_v2", f"listing {prefix}", **kwargs)
            out += [(o["Key"], int(o["Size"]), o["LastModified"].timestamp()) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return out
            token = page["NextContinuationToken"]

    def size(self, sha256: str) -> int | None:
        if not SHA.match(sha256):
            return None
        if (known := self._known_size(sha256)) is not None:
            return known
        where = self._packed_at(sha256)
        return where[2] if where else self._head(sha256)

    def _packed_at(self, sha: str) -> tuple[str, int, int] | None:
        """Where a packed file is (pack, offset, size): from the indexes in memory, else listed again."""
        if sha not in self._packed:
            self._load_packs()
        return self._packed.get(sha)

    # -- packs ----------------------------------------------------------------------------------------

    def _load_packs(self) -> None:
        """Read the pack indexes listed now (each fetched once: from the local cache, else from S3).
        A listing less than a second old is used again: a burst of checks costs one LIST."""
        if time.monotonic() - self._packs_loaded < 1.0:
            return
        listed = [key.rsplit("/", 1)[-1] for key, _, _ in self._list(self._key("packs") + "/")]
        new = [name for name in listed if name not in self._indexes and "." in name]
        for name, entries in zip(new, self._parallel(self._read_index, new), strict=True):
            self._indexes[name] = entries
        packed: dict[str, tuple[str, int, int]] = {}
        for name in listed:
            pack = name.split(".", 1)[0]
            for sha, start, size in self._indexes.get(name, []):
                packed[sha] = (pack, start, size)
        self._packed = packed
        self._packs_loaded = time.monotonic()

    def _index_cache(self) -> Path:
        where = hashlib.sha256(f"{self.endpoint}|{self.location}".encode()).hexdigest()[:16]
        return self._scratch / "s3-pack-indexes" / where

    def _read_index(self, name: str) -> list[tuple[str, int, int]]:
        cached = self._index_cache() / name
        try:
            data = cached.read_bytes()
        except FileNotFoundError:
            answer = self._call("get_object", f"pack index {name[:12]}...", Key=self._key("packs", name))
            data = answer["Body"].read()
            if hashlib.sha256(data).hexdigest()[:16] != name.split(".", 1)[-1]:
                raise ArtifactError(f"the pack index {name} in {self._where()} is damaged (its bytes do not match "
                                    "its name)") from None
            self._cache_index(name, data)
        return _index_entries(data)

    def _cache_index(self, name: str, data: bytes) -> None:
        cached = self._index_cache() / name
        with contextlib.suppress(OSError):  # a cache: a full disk only means fetching it again
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f"{name}.tmp{os.getpid()}")
            tmp.write_bytes(data)
            tmp.replace(cached)

    def pack_members(self) -> dict[str, set[str]]:
        self._load_packs()
        members: dict[str, set[str]] = {}
        for sha, (pack, _, _) in self._packed.items():
            members.setdefault(pack, set()).add(sha)
        return members

    # -- writing --------------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> Blob:
        sha = hashlib.sha256(data).hexdigest()
        if self.has(sha):
            self._refresh(sha)
        else:
            self._call("put_object", f"storing {sha[:12]}...", Key=self._object_key(sha), Body=data)
            self._remember(sha, len(data))
        return Blob(sha, len(data))

    def put_file(self, source: Path, progress: Stored | None = None) -> Blob:
        # Told of the bytes as they are sent, not as they are read and hashed (the fast part).
        return put_file_with(lambda src: self._put_stream(src, progress), source)

    def put_stream(self, src: BinaryIO) -> Blob:
        """Store what is left to read of an open file. Small content is read into memory and sent in
        one PUT; bigger content is copied to a file in ``scratch`` while it is hashed (so the bytes
        sent are the bytes hashed, even if the source changes meanwhile), then sent (in parts past
        the multipart threshold)."""
        return self._put_stream(src, None)

    def _put_stream(self, src: BinaryIO, progress: Stored | None) -> Blob:
        limit = min(self.multipart_threshold, IN_MEMORY)
        head = src.read(limit)
        if len(head) < limit:
            blob = self.put_bytes(head)
            if progress is not None:
                progress(blob.size)
            return blob
        digest = hashlib.sha256(head)
        self.ensure()
        with tempfile.TemporaryFile(dir=self._scratch, prefix="s3-put-") as tmp:
            tmp.write(head)
            size = len(head)
            while block := src.read(CHUNK):
                digest.update(block)
                tmp.write(block)
                size += len(block)
            sha = digest.hexdigest()
            if self.has(sha):
                self._refresh(sha)
                if progress is not None:
                    progress(size)  # already there: nothing to send
            else:
                tmp.seek(0)
                self._upload(tmp, self._object_key(sha), f"storing {sha[:12]}...", progress)
                self._remember(sha, size)
        return Blob(sha, size)

    def _upload(self, f: IO[bytes], key: str, what: str, progress: Stored | None = None) -> None:
        """Send the file ``f`` (positioned at its start) to ``key``: in one streamed PUT under the
        multipart threshold, else in parts that a later attempt resumes (``_send_parts``)."""
        self._count("upload")
        size = os.fstat(f.fileno()).st_size
        if size >= self.multipart_threshold:
            self._send_parts(f, key, size, what, progress)
            return
        from boto3.s3.transfer import TransferConfig

        with self._translate(what):
            # One PUT (boto3's own threshold is lower), streamed from the file; boto3 calls back with
            # the bytes sent as they go.
            self.client().upload_fileobj(f, self.bucket, key, Callback=progress,
                                         Config=TransferConfig(multipart_threshold=self.multipart_threshold))

    def _send_parts(self, f: IO[bytes], key: str, size: int, what: str, progress: Stored | None) -> None:
        """A multipart upload that resumes: the parts an earlier attempt sent to this key (the same
        content, as keys are content hashes) are kept when their size and MD5 match, and only the
        rest are sent. A checkpoint whose upload a dead node, a killed supervisor or a network failure
        cut short is finished from where it stopped, not sent again whole. Parts go several at a time,
        read with ``os.pread`` (no shared file position) and held in memory one part per thread."""
        chunk = self._part_size(size)
        count = -(-size // chunk)
        upload_id, sent = self._upload_under_way(f, key, size, what)
        if upload_id is None:
            upload_id = self._call("create_multipart_upload", what, Key=key)["UploadId"]
        if progress is not None and sent:
            progress(sum(min(chunk, size - (n - 1) * chunk) for n in sent))
        told = threading.Lock()

        def send(number: int) -> tuple[int, str]:
            body = os.pread(f.fileno(), chunk, (number - 1) * chunk)
            answer = self._call("upload_part", f"{what} (part {number} of {count})", Key=key, UploadId=upload_id,
                                PartNumber=number, Body=body)
            if progress is not None:
                with told:
                    progress(len(body))
            return number, str(answer["ETag"])

        missing = [n for n in range(1, count + 1) if n not in sent]
        try:
            with ThreadPoolExecutor(max(1, min(CONCURRENCY // 2, len(missing))),
                                    thread_name_prefix="runyard-s3") as pool:
                sent.update(pool.map(send, missing))
            parts = [{"PartNumber": n, "ETag": sent[n]} for n in sorted(sent)]
            self._call("complete_multipart_upload", what, Key=key, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
        except NotFound:
            # Another process storing the same content (it found the same upload under way) completed
            # it meanwhile: fine when the object is there now.
            self._call("head_object", what, Key=key)

    def _part_size(self, size: int) -> int:
        """Bytes per part: ``multipart_chunk``, or more for content that would need more than S3's
        10,000 parts (past 156 GiB at 16 MiB), in whole MiB. A function of the size alone, so that a
        resumed upload cuts the same parts."""
        return max(self.multipart_chunk, -(-size // (MAX_PARTS * MIB)) * MIB)

    def _upload_under_way(self, f: IO[bytes], key: str, size: int, what: str) -> tuple[str | None, dict[int, str]]:
        """The newest unfinished multipart upload to ``key`` and its parts that match ``f``
        (part number -> ETag), or (None, {}) when there is none. Parts that do not match (another
        part size) are sent again under the same upload; completing it drops what is not listed."""
        try:
            uploads = self._call("list_multipart_uploads", f"{what} (looking for an upload to resume)",
                                 Prefix=key).get("Uploads", [])
        except ArtifactError:
            # Credentials allowed to put objects are not always allowed to list uploads under way
            # (s3:ListBucketMultipartUploads): then every upload starts afresh, as boto3's would.
            return None, {}
        uploads = sorted((u for u in uploads if u.get("Key") == key), key=lambda u: u.get("Initiated") or 0)
        if not uploads:
            return None, {}
        upload_id = str(uploads[-1]["UploadId"])
        chunk = self._part_size(size)
        kept: dict[int, str] = {}
        marker = 0
        while True:
            try:
                page = self._call("list_parts", f"{what} (resuming)", Key=key, UploadId=upload_id,
                                  PartNumberMarker=marker)
            except NotFound:  # finished or aborted since it was listed
                return None, {}
            except ArtifactError:  # not allowed to list its parts (s3:ListMultipartUploadParts)
                return None, {}
            for part in page.get("Parts", []):
                number, etag = int(part["PartNumber"]), str(part["ETag"])
                start = (number - 1) * chunk
                if start >= size or int(part["Size"]) != min(chunk, size - start):
                    continue  # sent with another part size: sent again
                local = hashlib.md5(os.pread(f.fileno(), chunk, start), usedforsecurity=False).hexdigest()
                if etag.strip('"') == local:  # S3's ETag of a part is its MD5 (not under SSE-KMS: sent again)
                    kept[number] = etag
            if not page.get("IsTruncated"):
                break
            marker = int(page["NextPartNumberMarker"])
        return upload_id, kept

    def put_pack(self, sources: list[Path]) -> list[Blob]:
        """Store many small files as one pack object and one index object: two PUTs, however many files."""
        if not sources:
            return []
        self.ensure()
        blobs: list[Blob] = []
        pack_digest = hashlib.sha256()
        cache = self._pack_cache()
        cache.mkdir(parents=True, exist_ok=True)
        # Written where the local copy of the pack will be: a run materialised on this machine reads
        # its files from here, without fetching the pack back.
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".s3-pack-") as tmp:
            for source in sources:
                digest = hashlib.sha256()
                size = 0
                with Path(source).open("rb") as src:
                    while block := src.read(CHUNK):
                        digest.update(block)
                        pack_digest.update(block)
                        tmp.write(block)
                        size += len(block)
                blobs.append(Blob(digest.hexdigest(), size))
            total = tmp.tell()
            pack = pack_digest.hexdigest()
            offsets = []
            offset = 0
            for blob in blobs:
                offsets.append(offset)
                offset += blob.size
            index = "".join(f"{b.sha256} {start} {b.size}\n" for b, start in zip(blobs, offsets, strict=True)).encode()
            tmp.seek(0)
            if self.has(pack):
                self._refresh(pack)
            elif total < self.multipart_threshold:
                self._call("put_object", f"storing pack {pack[:12]}...", Key=self._object_key(pack), Body=tmp.read())
            else:
                self._upload(tmp, self._object_key(pack), f"storing pack {pack[:12]}...")
            tmp.flush()
            self._trim_packs()
            with contextlib.suppress(OSError):
                os.link(tmp.name, cache / pack)
        self._remember(pack, total)
        name = f"{pack}.{hashlib.sha256(index).hexdigest()[:16]}"
        self._call("put_object", f"storing pack index {pack[:12]}...", Key=self._key("packs", name), Body=index)
        self._cache_index(name, index)
        entries = [(b.sha256, start, b.size) for b, start in zip(blobs, offsets, strict=True)]
        self._indexes[name] = entries
        for sha, start, size in entries:
            self._packed[sha] = (pack, start, size)
        return blobs

    def put_tree(self, source: Path) -> list[tuple[str, Blob]]:
        """Store every file under ``source`` (symlinks inside it followed, out of it refused)."""
        source = Path(source)
        if not source.is_dir():
            raise NotFound(f"cannot store {source}: no such directory")
        return [(rel, self.put_file(path)) for rel, path in sorted(walk_tree(source, source.resolve(), set()))]

    # -- reading --------------------------------------------------------------------------------------

    def open(self, content_ref: str) -> BinaryIO:
        sha = sha_of_ref(content_ref)
        size = self._known_size(sha)
        where = self._packed_at(sha) if size is None else None
        if where is not None:
            # A packed file is small: read from the local copy of its pack (fetched once, whole), so
            # materialising a thousand-file snapshot costs one GET, not a thousand.
            pack, start, size = where
            with self._local_pack(pack).open("rb") as f:
                f.seek(start)
                return io.BytesIO(f.read(size))
        if size is None:
            size = self._head(sha)
        if size is None:
            raise NotFound(f"artifact content {content_ref[:19]}... is missing from {self._where()}")
        return io.BufferedReader(_Reader(self, self._object_key(sha), 0, size, content_ref), CHUNK)

    def _pack_cache(self) -> Path:
        return self._index_cache().parent.parent / "s3-packs" / self._index_cache().name

    def _local_pack(self, pack: str) -> Path:
        """This machine's copy of a pack (checked against its SHA-256 when fetched)."""
        local = self._pack_cache() / pack
        if local.is_file():
            with contextlib.suppress(OSError):
                os.utime(local)  # used now: the last to go
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        self._trim_packs()
        fd, name = tempfile.mkstemp(dir=local.parent, prefix=".s3-pack-")
        try:
            digest = hashlib.sha256()
            answer = self._call("get_object", f"reading pack {pack[:12]}...", Key=self._object_key(pack))
            with os.fdopen(fd, "wb") as out, self._translate(f"reading pack {pack[:12]}..."):
                while block := answer["Body"].read(CHUNK):
                    digest.update(block)
                    out.write(block)
            _verify(digest.hexdigest(), f"sha256:{pack}", self._where())
            Path(name).replace(local)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return local

    def _trim_packs(self, keep: int | None = None) -> None:
        """Remove the local pack copies used least lately until they take at most ``keep`` bytes
        (PACK_CACHE_BYTES), before another comes in."""
        keep = PACK_CACHE_BYTES if keep is None else keep
        copies = []
        for path in self._pack_cache().iterdir():
            if path.name.startswith("."):
                continue  # one being written
            with contextlib.suppress(OSError):
                st = path.stat()
                copies.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in copies)
        for _, size, path in sorted(copies):
            if total <= keep:
                break
            with contextlib.suppress(OSError):
                path.unlink()  # a reader holding it open keeps reading; the next one fetches it again
                total -= size

    def read_bytes(self, content_ref: str) -> bytes:
        with self.open(content_ref) as f:
            data = f.read()
        _verify(hashlib.sha256(data).hexdigest(), content_ref, self._where())
        return data

    def export(self, content_ref: str, dest_root: Path, relpath: str) -> Path:
        """Copy a blob to ``dest_root/relpath`` atomically (checked against its SHA-256 on the way),
        never following a symlink out of dest_root."""
        target = place(dest_root, relpath)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=".runyard-")
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, self.open(content_ref) as src:
                while block := src.read(CHUNK):
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            _verify(digest.hexdigest(), content_ref, self._where())
            Path(name).replace(target)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return target

    def share(self, content_ref: str, dest_root: Path, relpath: str, hard_link: bool) -> str | None:
        return None  # nothing on this machine to share blocks with: the caller copies

    # -- reclaiming (runyard gc) ----------------------------------------------------------------------

    def objects(self) -> Iterator[tuple[str, int, float]]:
        for key, size, written in self._list(self._key("objects") + "/"):
            shard, rest = key.rsplit("/", 2)[-2:]
            if SHA.match(shard + rest):
                yield shard + rest, size, written

    def unfinished(self, before: float, remove: bool) -> list[tuple[str, int]]:
        # Only pieces of uploads to a server: the scratch directory may be the system's temporary one.
        found = stale_files(self._scratch, before, remove, PARTIAL_PREFIX)
        marker: dict[str, str] = {}
        while True:
            try:
                page = self._call("list_multipart_uploads", "listing unfinished uploads",
                                  Prefix=self._key("objects") + "/", **marker)
            except ArtifactError as e:
                # Not allowed to list them: say so, and leave them to the bucket's lifecycle rules.
                log.warning("runyard gc: %s (an AbortIncompleteMultipartUpload lifecycle rule on the bucket "
                            "removes them too)", e)
                return found
            for upload in page.get("Uploads", []):
                initiated = upload.get("Initiated")
                if initiated is None or initiated.timestamp() >= before:
                    continue
                key, upload_id = str(upload["Key"]), str(upload["UploadId"])
                try:
                    parts = self._call("list_parts", f"listing the parts of {key}", Key=key, UploadId=upload_id)
                    listed = parts.get("Parts", [])
                    if any(p.get("LastModified") is not None and p["LastModified"].timestamp() >= before
                           for p in listed):
                        continue  # begun long ago, but resumed lately: someone is finishing it
                    size = sum(int(p["Size"]) for p in listed)
                    if remove:
                        self._call("abort_multipart_upload", f"aborting the upload to {key}", Key=key,
                                   UploadId=upload_id)
                except NotFound:
                    continue  # finished or aborted meanwhile
                found.append((f"{key} (upload {upload_id[:16]})", size))
            if not page.get("IsTruncated"):
                return found
            marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def remove(self, sha256: str) -> int:
        if not SHA.match(sha256):
            raise ArtifactError(f"not a SHA-256: {sha256!r}")
        size = self._head(sha256)
        # A pack's indexes go first: its files are stored only while an index of it is listed.
        for key, _, _ in self._list(self._key("packs", sha256) + "."):
            self._call("delete_object", f"removing pack index {sha256[:12]}...", Key=key)
        self._indexes = {name: e for name, e in self._indexes.items() if not name.startswith(sha256)}
        self._packed = {sha: where for sha, where in self._packed.items() if where[0] != sha256}
        self._packs_loaded = 0.0
        self._known.pop(sha256, None)
        if size is None:
            return 0
        self._call("delete_object", f"removing {sha256[:12]}...", Key=self._object_key(sha256))
        return size


def _require_boto3(location: str) -> None:
    try:
        import boto3  # noqa: F401 - only whether it is installed
    except ImportError:
        raise ArtifactError(f"artifacts = {location!r} needs boto3, which is not installed: "
                            "pip install 'runyard[s3]'") from None


def _index_entries(data: bytes) -> list[tuple[str, int, int]]:
    entries = []
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and SHA.match(parts[0]):
            entries.append((parts[0], int(parts[1]), int(parts[2])))
    return entries


def _verify(got: str, content_ref: str, where: str) -> None:
    if f"sha256:{got}" != content_ref:
        raise ArtifactError(f"artifact content {content_ref[:19]}... in {where} is damaged: its bytes hash to "
                            f"sha256:{got[:12]}...; store it again from a copy, or remove the run that refers to it")


class _Reader(io.RawIOBase):
    """``size`` bytes of an object from ``base``, read by ranged GETs as they are consumed; seekable."""

    def __init__(self, store: S3Artifacts, key: str, base: int, size: int, ref: str) -> None:
        self.store, self.key, self.base, self.length, self.ref = store, key, base, size, ref
        self.pos = 0
        self.body: Any = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        new = {0: offset, 1: self.pos + offset, 2: self.length + offset}[whence]
        if new < 0:
            raise ValueError("negative seek position")
        if new != self.pos:
            self._drop()
            self.pos = new
        return self.pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.length - self.pos)
        if want <= 0:
            return 0
        if self.body is None:
            first, last = self.base + self.pos, self.base + self.length - 1
            answer = self.store._call("get_object", f"reading {self.ref[:19]}...", Key=self.key,
                                      Range=f"bytes={first}-{last}")
            self.body = answer["Body"]
        with self.store._translate(f"reading {self.ref[:19]}..."):
            data = self.body.read(want)
        if not data:
            raise ArtifactError(f"artifact content {self.ref[:19]}... in {self.store._where()} ended early: "
                                f"{self.pos} of {self.length} bytes")
        buffer[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def _drop(self) -> None:
        if self.body is not None:
            with contextlib.suppress(Exception):
                self.body.close()
            self.body = None

    def close(self) -> None:
        self._drop()
        super().close()
