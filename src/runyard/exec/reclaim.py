"""Reclaiming disk (``runyard gc``, ``runyard rm``): content no run refers to, package environments
unused for days, and the directories of finished runs.

Content is kept when anything refers to it: a run's artifacts, inputs, snapshot (its manifest and
every file it lists, packed or not) or uncommitted diff. Content written recently is kept too, since
a run may be about to refer to it: ``gc`` keeps anything written since the oldest queued or running
run was created or within ``GRACE_S`` (a submission stores its snapshot before its run exists;
storing content again marks it as written now); ``rm`` keeps the deleted runs' content if anything
stored it again after they ended. A pack goes only when none of its files is referred to.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runyard.errors import ArtifactError, NotFound
from runyard.exec.snapshot import manifest_of
from runyard.exec.spec import run_directory
from runyard.exec.venvs import READY, in_use
from runyard.spool.rundir import retired_dir, run_dir
from runyard.types import RunStatus

if TYPE_CHECKING:
    from runyard.store.artifacts import ArtifactStore

#: Content written this recently (seconds) is never collected by ``runyard gc``.
GRACE_S = 3600.0
#: How a snapshot's manifest starts (``snapshot.take`` writes it with sorted keys), and its largest size
#: worth reading when looking for recent snapshots.
MANIFEST_HEAD = b'{"files":'
MANIFEST_MAX = 64 << 20
ACTIVE = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class Kind:
    """What one kind of thing would free, or freed: how many, how many bytes, and which."""

    count: int = 0
    bytes: int = 0
    items: list[str] = field(default_factory=list)

    def add(self, name: str, size: int) -> None:
        self.count += 1
        self.bytes += size
        self.items.append(name)


@dataclass
class Report:
    dry_run: bool
    content: Kind = field(default_factory=Kind)
    environments: Kind = field(default_factory=Kind)
    run_directories: Kind = field(default_factory=Kind)
    uploads: Kind = field(default_factory=Kind)
    runs: list[int] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return self.content.bytes + self.environments.bytes + self.run_directories.bytes + self.uploads.bytes

    def as_dict(self) -> dict[str, Any]:
        kinds = {name: {"count": k.count, "bytes": k.bytes} for name, k in
                 (("content", self.content), ("environments", self.environments),
                  ("run_directories", self.run_directories), ("unfinished_uploads", self.uploads))}
        return {"dry_run": self.dry_run, **kinds, "total_bytes": self.total_bytes, "runs_deleted": self.runs}


# -- content --------------------------------------------------------------------------------------

def referenced(store: Any, artifacts: ArtifactStore, runs_only: Sequence[int] | None = None,
               progress: Progress = _quiet) -> set[str]:
    """SHA-256s of the content that runs (every run, or ``runs_only``) refer to, snapshot files included."""
    shas: set[str]
    snapshots: set[str]
    shas, snapshots = store.content_references(runs_only)
    for i, snapshot in enumerate(sorted(snapshots), 1):
        progress(f"reading snapshot manifests: {i:,} of {len(snapshots):,}")
        try:
            shas.update(sha for sha, _ in manifest_of(snapshot, artifacts).values())
        except (NotFound, ArtifactError, ValueError, KeyError):
            continue  # a manifest already missing refers to nothing that can be kept
    return shas


def _protected_since(store: Any, now: float, grace: float) -> float:
    active = store.runs_with_status(list(ACTIVE))
    return float(min([now - grace, *(r.created_at for r in active)]))


def unreferenced(store: Any, artifacts: ArtifactStore, since: float, only: set[str] | None = None,
                 progress: Progress = _quiet) -> list[tuple[str, int]]:
    """Stored objects (sha256, bytes) that nothing refers to and nobody wrote at or after ``since``;
    among ``only`` (and the packs holding any of ``only``) when given."""
    keep = referenced(store, artifacts, progress=progress)
    stored = list(artifacts.objects())
    keep |= _recent_snapshot_files(artifacts, [sha for sha, size, written in stored
                                               if written >= since and size <= MANIFEST_MAX])
    packs = artifacts.pack_members()
    if only is not None:
        only = only | {pack for pack, members in packs.items() if members & only}
    found = []
    for i, (sha, size, written) in enumerate(stored, 1):
        if i % 1000 == 0:
            progress(f"checking stored content: {i:,} objects")
        if (only is not None and sha not in only) or sha in keep or written >= since:
            continue
        if packs.get(sha, set()) & keep:
            continue  # a pack holding a file still referred to
        found.append((sha, size))
    return found


def _recent_snapshot_files(artifacts: ArtifactStore, recent: Iterable[str]) -> set[str]:
    """The files of snapshots stored recently: a submission stores its snapshot's manifest (or
    marks it written again) before its run exists, and the files it lists may be old content that
    nothing else refers to, reused from the hash cache without being written again."""
    files: set[str] = set()
    for sha in recent:
        try:
            with artifacts.open(f"sha256:{sha}") as f:
                if f.read(len(MANIFEST_HEAD)) != MANIFEST_HEAD:
                    continue
            files.update(file_sha for file_sha, _ in manifest_of(f"sha256:{sha}", artifacts).values())
        except (NotFound, ArtifactError, ValueError, KeyError, TypeError, OSError):
            continue  # not a snapshot's manifest after all
    return files


def _remove_content(store: Any, artifacts: ArtifactStore, found: Iterable[tuple[str, int]], report: Report,
                    progress: Progress) -> None:
    for sha, size in found:
        if not report.dry_run:
            size = artifacts.remove(sha)
        report.content.add(sha, size)
        progress(f"removing content: {report.content.count:,} objects")
    if not report.dry_run:
        _forget_grants(store, artifacts)


def _forget_grants(store: Any, artifacts: ArtifactStore) -> None:
    """Forget the upload grants of content the store no longer holds (removed now or by an earlier
    gc): a grant outliving its content would let its project refer to the bytes once anyone stores
    them again. Checked outside the write transaction; a project uploading the content meanwhile
    loses its grant and is told to upload again, which fails closed."""
    gone = [sha for sha in store.granted_content() if not artifacts.has(sha)]
    if gone:
        store.forget_grants(gone)


# -- directories ----------------------------------------------------------------------------------

def _du(path: Path) -> int:
    """Bytes removing ``path`` frees: a file with other links (a big code file shared with the
    artifact store, see ``snapshot.materialise``) frees nothing."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))  # noqa: PTH118
                if st.st_nlink == 1:
                    total += st.st_size
    return total


def remove_tree(path: Path) -> None:
    """Remove a directory even where a run made it read-only (mounted inputs are)."""
    def retry(function: Callable[..., Any], target: str, _: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)  # noqa: PTH101, PTH120
        with contextlib.suppress(FileNotFoundError):
            function(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def stale_environments(home: Path, days: float, now: float) -> list[tuple[Path, int]]:
    """Package environments (``$RUNYARD_HOME/envs/<key>``) whose last use is more than ``days`` ago;
    the last use is when the environment's ready marker was last touched (built or reused)."""
    root = home / "envs"
    if not root.is_dir():
        return []
    found = []
    for env in sorted(root.iterdir()):
        if not env.is_dir() or env.is_symlink():
            continue
        marker = env / READY
        used = (marker if marker.exists() else env).stat().st_mtime
        if now - used > days * 86400 and not in_use(root, env.name):
            found.append((env, _du(env)))
    return found


def remove_stale_environments(home: Path, days: float, now: float | None = None) -> list[tuple[Path, int]]:
    """Remove the package environments of ``home`` unused for ``days``, unless in use; returns the
    ones removed, with their sizes."""
    now = time.time() if now is None else now
    return [(env, size) for env, size in stale_environments(home, days, now) if _remove_environment(env, days, now)]


def _remove_environment(env: Path, days: float, now: float) -> bool:
    """Remove an environment under its build lock, unless a run is building or reusing it right now."""
    with (env.parent / f"{env.name}.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        marker = env / READY
        if marker.exists() and now - marker.stat().st_mtime <= days * 86400:
            return False  # reused since it was listed
        if in_use(env.parent, env.name):
            return False  # a run started days ago with it is still running
        remove_tree(env)
        return True


def finished_run_directories(store: Any, home: Path, ended_before: float | None) -> list[tuple[Path, int]]:
    """Directories (``$RUNYARD_HOME/runs/<id>``) of runs in a final state that ended before the time
    given (None: every finished run)."""
    found = []
    for _, run_id in store.ended_before(ended_before):
        directory = run_directory(home, run_id)
        if directory.is_dir():
            found.append((directory, _du(directory)))
    return found


# -- the commands' work ---------------------------------------------------------------------------

def collect(store: Any, artifacts: ArtifactStore, home: Path, *, env_days: float, runs_ended_before: float | None,
            run_directories: bool, dry_run: bool, progress: Progress = _quiet, now: float | None = None) -> Report:
    """``runyard gc``: find (and unless ``dry_run``, remove) what nothing needs."""
    now = time.time() if now is None else now
    report = Report(dry_run)
    since = _protected_since(store, now, GRACE_S)
    _remove_content(store, artifacts, unreferenced(store, artifacts, since, progress=progress), report, progress)
    # Begun before every active run and the grace period: no sender is coming back to finish them.
    for name, size in artifacts.unfinished(since, remove=not dry_run):
        report.uploads.add(name, size)
    for env, size in stale_environments(home, env_days, now):
        if dry_run or _remove_environment(env, env_days, now):
            report.environments.add(str(env), size)
    if run_directories:
        for directory, size in finished_run_directories(store, home, runs_ended_before):
            progress(f"removing run directories: {report.run_directories.count + 1:,}")
            if not dry_run:
                remove_tree(directory)
            report.run_directories.add(str(directory), size)
    return report


def delete_runs(store: Any, artifacts: ArtifactStore, home: Path, spool_dir: Path, runs: Sequence[Any],
                progress: Progress = _quiet) -> Report:
    """``runyard rm``: delete finished runs with their records, directories and spools, then the
    content only they referred to. Returns what was freed (``runs``: the numbers deleted)."""
    report = Report(dry_run=False)
    numbers = [r.number for r in runs]
    theirs = referenced(store, artifacts, numbers, progress)
    ids = {r.number: r.id for r in runs}
    for number in numbers:  # the spool first: an agent reading it must not bring the run back
        for directory in (run_dir(spool_dir, ids[number]), retired_dir(run_dir(spool_dir, ids[number]))):
            if directory.is_dir():
                remove_tree(directory)
    report.runs = store.delete_runs(numbers)
    for number in report.runs:
        directory = run_directory(home, ids[number])
        if directory.is_dir():
            size = _du(directory)
            remove_tree(directory)
            report.run_directories.add(str(directory), size)
    # The deleted runs' own content was written before they ended; written again since, it is another
    # run's now (storing content again marks it written), which that run may not have recorded yet.
    since = max(r.ended_at if r.ended_at is not None else r.created_at for r in runs) + 1.0
    found = unreferenced(store, artifacts, since, only=theirs, progress=progress)
    _remove_content(store, artifacts, found, report, progress)
    return report
