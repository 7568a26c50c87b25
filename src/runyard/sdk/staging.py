"""Copying artifacts out of the training process's way.

``run.log_artifact()`` hands the copy to one background thread, which hashes the file while copying
it into the run's spool directory (``files/<sha256>``, atomically). The artifact record is queued
only once the copy is complete; ingest then moves the file into the artifact store. The SDK never
touches the store itself, and a file changed after ``log_artifact()`` returned may be copied as it
was at any moment of the copy, never half of each: a changed file is detected and copied again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from runyard.errors import ArtifactPathError
from runyard.names import validate_relpath

if TYPE_CHECKING:
    from runyard.sdk.run import Run

FILES_DIR = "files"
_executors: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _executor(run: Run) -> ThreadPoolExecutor:
    with _lock:
        if run.id not in _executors:
            _executors[run.id] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runyard-artifacts")
        return _executors[run.id]


def stage_file(staging: Path, source: Path) -> tuple[str, int]:
    """Copy ``source`` into ``staging/<sha256>``; returns (sha256, size)."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f".tmp-{threading.get_ident()}"
    for _attempt in range(3):
        before = source.stat()
        digest = hashlib.sha256()
        size = 0
        with source.open("rb") as src, tmp.open("wb") as out:
            while block := src.read(1 << 20):
                digest.update(block)
                out.write(block)
                size += len(block)
            out.flush()
            os.fsync(out.fileno())
        after = source.stat()
        if (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size):
            break  # nobody wrote to the file while we copied it
    sha = digest.hexdigest()
    tmp.replace(staging / sha)
    return sha, size


def stage_bytes(staging: Path, data: bytes) -> tuple[str, int]:
    """Put ``data`` into ``staging/<sha256>``; returns (sha256, size)."""
    staging.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256(data).hexdigest()
    tmp = staging / f".tmp-{threading.get_ident()}"
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(staging / sha)
    return sha, len(data)


def _files_of(source: Path, target: str) -> list[tuple[Path, str]]:
    if source.is_file():
        return [(source, target)]
    root = source.resolve()
    out = []
    for path in sorted(source.rglob("*")):
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ArtifactPathError(f"{path} is a symlink to {path.resolve()}, outside {root}")
        if path.is_file():
            out.append((path, validate_relpath(f"{target}/{path.relative_to(source).as_posix()}")))
    return out


def copy_in_background(run: Run, source: Path, target: str) -> None:
    staging = run._writer.directory / FILES_DIR

    def copy() -> None:
        try:
            for path, name in _files_of(source, target):
                sha, size = stage_file(staging, path)
                run._record_artifact(name, size, sha)
        except BaseException as e:  # noqa: BLE001 - reported through the run, not raised in a thread
            run._absorb(e, raise_strict=False)
        finally:
            run.artifacts_pending -= 1

    _executor(run).submit(copy)


def wait_for_copies(run: Run, timeout: float) -> bool:
    """Wait for the run's artifact copies; False if some are still going after ``timeout``."""
    with _lock:
        executor = _executors.pop(run.id, None)
    if executor is None:
        return True
    executor.shutdown(wait=False)
    deadline = time.monotonic() + timeout
    while run.artifacts_pending > 0:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True
