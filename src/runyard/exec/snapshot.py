"""Code snapshots: the working tree as it is at submission, content-addressed and deduplicated.

In a git repository the snapshot holds the tracked files and the untracked ones git does not
ignore; elsewhere, every file under the directory except what ``.runyardignore`` lists (one
glob a line, as in .gitignore, without negation). Each file's bytes go into the artifact store once
(by SHA-256); the snapshot itself is a manifest (path -> sha256, mode) stored the same way, so its
id names exactly this tree. Submitting an unchanged tree again stores nothing new, and a cache of
(size, mtime) per path spares re-hashing files that did not change.

The run executes in a directory materialised from the manifest, never in the working tree, so
editing or deleting files after submission changes nothing for a queued or running run.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from runyard.errors import InvalidArgument
from runyard.names import validate_relpath
from runyard.store.artifacts import ArtifactStore, Blob

IGNORE_FILE = ".runyardignore"
#: Never part of a snapshot, git or not.
ALWAYS_IGNORED = (".git", ".runyard", "__pycache__", ".venv", "node_modules", ".mypy_cache", ".pytest_cache")
MAX_FILES = 50_000
MAX_BYTES = 2 << 30
#: Files this big get an object of their own instead of a place in a pack, so that runs can share
#: them (reflink or hard link) instead of each copying them; smaller files gain little from it.
SHARE_MIN = 1 << 20


@dataclass(frozen=True)
class Snapshot:
    id: str
    files: int
    bytes: int
    new_bytes: int
    git_commit: str | None = None
    git_branch: str | None = None
    git_diff_ref: str | None = None
    root: Path = field(default=Path())


def _git(root: Path, *args: str) -> bytes | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def git_root(directory: Path) -> Path | None:
    for candidate in (directory, *directory.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def ignore_patterns(root: Path) -> list[str]:
    try:
        lines = (root / IGNORE_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def ignored(rel: str, patterns: Iterable[str]) -> bool:
    parts = rel.split("/")
    for pattern in patterns:
        if "/" in pattern.strip("/"):
            if fnmatch.fnmatch(rel, pattern.strip("/")) or rel.startswith(pattern.strip("/") + "/"):
                return True
        elif any(fnmatch.fnmatch(part, pattern) for part in parts):
            return True
    return False


def list_files(root: Path) -> list[str]:
    """Relative POSIX paths of the files a snapshot of ``root`` holds, sorted."""
    out: list[str]
    if (root / ".git").exists() and (listed := _git(root, "ls-files", "-z", "-c", "-o", "--exclude-standard")):
        out = [p for p in listed.decode("utf-8", "surrogateescape").split("\0") if p]
    elif (root / ".git").exists():
        out = []
    else:
        out = list(_walk(root, root, ignore_patterns(root)))
    base = str(root)
    files = []
    for rel in sorted(set(out)):
        if any(part in ALWAYS_IGNORED for part in rel.split("/")):
            continue
        try:
            mode = os.lstat(os.path.join(base, rel)).st_mode  # noqa: PTH118 - see take()
        except OSError:
            continue  # listed by git but deleted from the working tree
        if stat.S_ISREG(mode) or (stat.S_ISLNK(mode) and _inside_link(root, rel)):
            files.append(rel)
    return files


def _inside_link(root: Path, rel: str) -> bool:
    path = root / rel
    return path.is_symlink() and path.is_file() and path.resolve().is_relative_to(root.resolve())


def _walk(root: Path, directory: Path, patterns: list[str]) -> Iterator[str]:
    for entry in os.scandir(directory):
        rel = Path(entry.path).relative_to(root).as_posix()
        if entry.name in ALWAYS_IGNORED or ignored(rel, patterns):
            continue
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, Path(entry.path), patterns)
        elif entry.is_file(follow_symlinks=False) or _inside_link(root, rel):
            yield rel


class HashCache:
    """(size, mtime_ns) -> sha256 per path, so an unchanged file is not read again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, list[object]] = {}
        self.changed = False
        try:
            self.entries = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            self.entries = {}

    def get(self, key: str, st: os.stat_result) -> str | None:
        entry = self.entries.get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            return str(entry[2])
        return None

    def put(self, key: str, st: os.stat_result, sha: str) -> None:
        self.entries[key] = [st.st_size, st.st_mtime_ns, sha]
        self.changed = True

    def save(self) -> None:
        if self.changed:
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.entries))
            tmp.replace(self.path)


def take(directory: Path, artifacts: ArtifactStore, cache_path: Path | None = None,
         progress: Callable[[int, int], None] | None = None) -> Snapshot:
    """Snapshot the working tree that holds ``directory`` (its git root, or ``directory`` itself).
    ``progress`` is told (bytes stored, of how many) as the new files go into the store."""
    directory = directory.resolve()
    root = git_root(directory) or directory
    files = list_files(root)
    if len(files) > MAX_FILES:
        raise InvalidArgument(f"{root} has {len(files):,} files to snapshot (more than {MAX_FILES:,}); "
                              f"list what the run does not need in {IGNORE_FILE}")
    cache = HashCache(cache_path) if cache_path else None
    manifest: dict[str, list[object]] = {}
    total = new = 0
    base = str(root)
    missing: list[tuple[str, os.stat_result]] = []
    known: list[tuple[str, os.stat_result, str]] = []
    for rel in files:
        validate_relpath(rel)
        # os.path and os.stat, not pathlib: once per file, on the path that must return in 250 ms.
        key = os.path.join(base, rel)  # noqa: PTH118
        st = os.stat(key)  # noqa: PTH116
        total += st.st_size
        if total > MAX_BYTES:
            raise InvalidArgument(f"{root} holds more than {MAX_BYTES >> 30} GiB of files to snapshot; list data "
                                  f"and outputs in {IGNORE_FILE} and mount them with --mount instead")
        sha = cache.get(key, st) if cache else None
        if sha is None:
            missing.append((rel, st))
        else:
            known.append((rel, st, sha))
    # Whether the store still holds the files hashed before: one batched question, not one per file
    # (on S3, a request per file would cost seconds).
    present = artifacts.has_many({sha for _, _, sha in known})
    for rel, st, sha in known:
        if sha in present:
            manifest[rel] = [sha, 0o755 if st.st_mode & stat.S_IXUSR else 0o644]
        else:
            missing.append((rel, st))
    # New small files go in as one pack: one file written and synced, not one per source file.
    # Big ones get an object each, which runs can share instead of copying (see materialise).
    if missing:
        small = [(rel, st) for rel, st in missing if st.st_size < SHARE_MIN]
        big = [(rel, st) for rel, st in missing if st.st_size >= SHARE_MIN]
        blobs = _put_told(artifacts, root, small, big, progress or _untold)
        for (rel, st), blob in zip(small + big, blobs, strict=True):
            if cache:
                cache.put(os.path.join(base, rel), st, blob.sha256)  # noqa: PTH118
            new += st.st_size
            manifest[rel] = [blob.sha256, 0o755 if st.st_mode & stat.S_IXUSR else 0o644]
    body = json.dumps({"version": 1, "files": manifest}, sort_keys=True, separators=(",", ":")).encode()
    snapshot = artifacts.put_bytes(body)
    if cache:
        cache.save()
    commit = branch = diff_ref = None
    if (root / ".git").exists():
        heads = (_git(root, "rev-parse", "HEAD", "--abbrev-ref", "HEAD") or b"").decode().split()
        commit, branch = (heads[0], heads[1]) if len(heads) == 2 else (None, None)
        diff = _git(root, "diff", "HEAD", "--binary") if commit else None
        if diff:
            diff_ref = artifacts.put_bytes(diff).content_ref
    return Snapshot(snapshot.content_ref, len(files), total, new, commit, branch, diff_ref, root)


def manifest_of(snapshot_id: str, artifacts: ArtifactStore) -> dict[str, tuple[str, int]]:
    doc = json.loads(artifacts.read_bytes(snapshot_id))
    return {path: (str(sha), int(mode)) for path, (sha, mode) in doc["files"].items()}


@dataclass(frozen=True)
class Materialised:
    #: path -> sha256 of every file written
    files: dict[str, str]
    #: files placed by reflink (copy-on-write), the paths of those placed by hard link (read-only),
    #: and the bytes of both
    reflinked: int = 0
    linked: tuple[str, ...] = ()
    shared_bytes: int = 0


def materialise(snapshot_id: str, artifacts: ArtifactStore, destination: Path,
                hard_links: bool = False) -> Materialised:
    """Write the snapshot's files under ``destination``.

    Files of ``SHARE_MIN`` bytes or more are not copied where the file system allows: a reflink
    shares the object's blocks copy-on-write (the run's file is its own, writable, with its mode);
    else, with ``hard_links``, a hard link to the object: read-only (0444), so a run cannot change
    the store through it; the caller makes sure the command cannot override that (root). An
    executable file is never hard-linked (its mode would be the object's); anything else is copied.
    """
    files = manifest_of(snapshot_id, artifacts)
    reflinked = shared = 0
    linked: list[str] = []
    for rel, (sha, mode) in files.items():
        ref = f"sha256:{sha}"
        how = None
        size = artifacts.size(sha) or 0
        if size >= SHARE_MIN:
            how = artifacts.share(ref, destination, rel, hard_links and not mode & stat.S_IXUSR)
        if how == "link":
            linked.append(rel)
            shared += size
            continue
        if how == "reflink":
            reflinked += 1
            shared += size
            target = destination / rel
        else:
            target = artifacts.export(ref, destination, rel)
        target.chmod(mode)
    return Materialised({rel: sha for rel, (sha, _) in files.items()}, reflinked, tuple(linked), shared)


def _untold(done: int, total: int) -> None:
    pass


def _put_told(artifacts: ArtifactStore, root: Path, small: list[tuple[str, os.stat_result]],
              big: list[tuple[str, os.stat_result]], progress: Callable[[int, int], None]) -> list[Blob]:
    """Store the pack of small files, then each big one, telling ``progress`` as bytes go in (a
    big file on S3 goes in parts, each told as it is sent)."""
    import threading

    total = sum(st.st_size for _, st in small + big)
    done = 0
    lock = threading.Lock()  # S3 sends a file's parts from several threads

    def stored(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            progress(done, total)

    progress(0, total)
    blobs = artifacts.put_pack([root / rel for rel, _ in small])
    stored(sum(st.st_size for _, st in small))
    for rel, _ in big:
        blobs.append(artifacts.put_file(root / rel, stored))
    return blobs
