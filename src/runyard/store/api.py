"""The store's contract: the only store names that ingest, the server and execution import.

Values crossing the boundary are frozen dataclasses; the ``Store`` protocol is what ``SqlStore``
implements (and what a test double may implement). Nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from runyard.store.newrun import NewRun as NewRun  # re-exported: part of this contract
from runyard.types import RunKind, RunStatus

if TYPE_CHECKING:
    from runyard.store.series import Envelope, Points

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of results and the cursor of the next one (None on the last page)."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    description: str
    created_at: float
    run_count: int = 0


@dataclass(frozen=True)
class Run:
    number: int
    id: str
    project: str
    name: str | None
    status: RunStatus
    status_message: str | None
    command: list[str] | None
    created_at: float
    queued_at: float | None
    started_at: float | None
    ended_at: float | None
    heartbeat_at: float | None
    exit_code: int | None
    executor: str | None
    host: str | None
    resources: dict[str, Any]
    priority: int
    snapshot_id: str | None
    git_commit: str | None
    git_branch: str | None
    git_diff_ref: str | None
    parent: int | None
    notes: str
    config: dict[str, Any]
    summary: dict[str, Any]
    environment: dict[str, Any]
    labels: tuple[str, ...]
    launch: dict[str, Any] | None = None
    #: What it executes: a command, or a notebook (``runyard run notebook.ipynb``).
    kind: RunKind = RunKind.SCRIPT

    @property
    def display_name(self) -> str:
        return self.name or f"run {self.number}"

    def duration(self, now: float) -> float | None:
        """Seconds from start to end (or to ``now`` while it runs); None if it never started."""
        if self.started_at is None:
            return None
        return (self.ended_at if self.ended_at is not None else now) - self.started_at


#: Fields a run can be sorted by, besides ``config.<key>`` and ``summary.<key>``.
RUN_SORT_FIELDS = ("number", "name", "status", "created_at", "started_at", "ended_at", "priority")


@dataclass(frozen=True)
class RunQuery:
    project: str | None = None
    #: A run must carry every one of these labels.
    labels: Sequence[str] = ()
    status: Sequence[RunStatus] = ()
    #: A run must be of one of these kinds (none: any kind).
    kinds: Sequence[RunKind] = ()
    #: A field of RUN_SORT_FIELDS, or ``config.<key>`` / ``summary.<key>``.
    sort: str = "number"
    descending: bool = True
    limit: int = 100
    cursor: str | None = None


@dataclass(frozen=True)
class RunPatch:
    """A change to a run; fields left as None are not touched."""

    name: str | None = None
    notes: str | None = None
    status: RunStatus | None = None
    status_message: str | None = None
    exit_code: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    heartbeat_at: float | None = None
    #: Merged into the run's config / summary (a key mapped to None is removed).
    config: Mapping[str, Any] | None = None
    summary: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SeriesInfo:
    key: str
    count: int
    first_step: int | None
    last_step: int | None
    last_value: float | None
    last_time: float | None


@dataclass(frozen=True)
class LogLine:
    time: float
    text: str
    stream: Literal["stdout", "stderr", "system"] = "stdout"
    #: Position in the run's log, assigned by the store; use it as the ``after`` cursor.
    id: int = 0


@dataclass(frozen=True)
class ArtifactEntry:
    path: str
    size: int
    sha256: str
    content_ref: str
    created_at: float
    #: Permission bits the file had in the run; None when not recorded.
    mode: int | None = None


@dataclass(frozen=True)
class RunInput:
    kind: Literal["artifact", "dataset", "path"]
    sha256: str
    source_run: int | None = None
    source_path: str | None = None
    mount: str | None = None
    #: The consuming run; filled in by the store when read back.
    run: int = 0


@dataclass(frozen=True)
class AlertRule:
    name: str
    kind: str
    spec: Mapping[str, Any]
    action: Literal["notify", "stop"] = "notify"
    notify: Sequence[str] = ("inbox",)
    project: str | None = None
    run: int | None = None
    enabled: bool = True
    source: str | None = None
    id: int = 0


@dataclass(frozen=True)
class AlertEvent:
    run: int
    kind: str
    message: str
    time: float
    rule_id: int | None = None
    metric: str | None = None
    step: int | None = None
    value: float | None = None
    seen_at: float | None = None
    delivery: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass(frozen=True)
class Lease:
    """A named role held by one process until ``expires_at`` (the database's clock) unless renewed:
    ``agent:<id>`` (an agent is alive; ``info`` describes its machine) or ``outbox``."""

    name: str
    holder: str
    host: str | None
    acquired_at: float
    expires_at: float
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    """Which agent holds a launched run, and what it was asked to do with it."""

    run: int
    agent: str
    host: str | None
    claimed_at: float
    #: When the holder handed the run to a supervisor (None: claimed, never started).
    submitted_at: float | None = None
    #: When someone asked for the run to stop, and when its holder signalled the supervisor.
    stop_requested_at: float | None = None
    stop_sent_at: float | None = None


class Store(Protocol):
    """Metadata, metric series, logs and the artifact index of runs."""

    # projects
    def ensure_project(self, name: str) -> Project: ...
    def list_projects(self) -> list[Project]: ...

    # runs
    def create_run(self, new: NewRun) -> Run: ...
    def resolve(self, ref: str | int) -> int: ...
    def get_run(self, ref: str | int) -> Run: ...
    def children_of(self, number: int) -> list[Run]: ...
    def list_runs(self, query: RunQuery) -> Page[Run]: ...
    def update_run(self, number: int, patch: RunPatch) -> Run: ...
    def set_labels(self, number: int, add: Sequence[str] = (), remove: Sequence[str] = ()) -> Run: ...

    # metric series
    def append_points(self, run: int, series: Mapping[str, Points]) -> None: ...
    def list_series(self, run: int) -> list[SeriesInfo]: ...
    def history(self, run: int, key: str, start: int | None = None, end: int | None = None) -> Points: ...
    def envelope(
        self, run: int, key: str, buckets: int = 1000, start: int | None = None, end: int | None = None
    ) -> Envelope: ...

    # logs
    def append_logs(self, run: int, lines: Sequence[LogLine]) -> None: ...
    def read_logs(self, run: int, after: int = 0, limit: int = 1000) -> list[LogLine]: ...

    # artifacts and lineage
    def record_artifact(self, run: int, path: str, size: int, sha256: str, content_ref: str) -> ArtifactEntry: ...
    def list_artifacts(self, run: int, prefix: str = "") -> list[ArtifactEntry]: ...
    def add_input(self, run: int, item: RunInput) -> None: ...
    def inputs_of(self, run: int) -> list[RunInput]: ...
    def consumers_of(self, sha256: str) -> list[RunInput]: ...
    def consumers_of_run(self, run: int) -> list[RunInput]: ...

    # alerts
    def add_alert_rule(self, rule: AlertRule) -> AlertRule: ...
    def list_alert_rules(self, project: str | None = None, run: int | None = None) -> list[AlertRule]: ...
    def alert_rules_stamp(self) -> tuple[int, int]: ...
    def remove_alert_rule(self, rule_id: int) -> bool: ...
    def add_alert_event(self, event: AlertEvent) -> AlertEvent: ...
    def list_alert_events(self, run: int | None = None, unseen_only: bool = False) -> list[AlertEvent]: ...
    def mark_alerts_seen(self, ids: Sequence[int]) -> None: ...
    def status_counts(self, since: float, project: str | None = None) -> dict[str, int]: ...

    # ingest
    def ingest(self, batch: IngestBatch) -> IngestResult: ...
    def ingest_cursor(self, run_id: str, writer: str) -> int: ...
    def mark_lost(self, run_id: str, message: str) -> bool: ...

    def close(self) -> None: ...


@dataclass
class IngestBatch:
    """Everything a run of records from one writer changes, applied in one transaction.

    ``first_seq``..``last_seq`` are the writer's sequence numbers this batch covers; the store
    applies it only if its cursor for (run, writer) is below ``first_seq``, then moves the cursor
    to ``last_seq``. Applying the same batch twice changes nothing.
    """

    run_id: str
    writer: str
    first_seq: int
    last_seq: int
    #: The start event: creates the run, or (``attach``) updates the run ``runyard run`` made.
    start: Mapping[str, Any] | None = None
    points: dict[str, Points] = field(default_factory=dict)
    logs: list[LogLine] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    labels_added: list[str] = field(default_factory=list)
    labels_removed: list[str] = field(default_factory=list)
    #: (path, size, sha256, content_ref), already in the artifact store.
    #: (path, size, sha256, content_ref, mode or None)
    artifacts: list[tuple[str, int, str, str, int | None]] = field(default_factory=list)
    inputs: list[RunInput] = field(default_factory=list)
    environment: dict[str, Any] = field(default_factory=dict)
    heartbeat: float | None = None
    #: Alert rules the script declared for its run (``run.alert``), checked.
    alert_rules: list[AlertRule] = field(default_factory=list)
    #: The end event: status ("finished", "failed", ...), exit_code, time.
    end: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model: an immutable pointer to the artifacts of run ``run_number``
    under ``path`` ("" for all of them), with the digest those artifacts had when it was registered."""

    name: str
    version: int
    run_number: int
    run_id: str
    path: str
    #: sha256 over the sorted (path relative to ``path``, content sha256) of the entries (``entries_digest``).
    digest: str
    file_count: int
    size: int
    description: str
    #: Who registered it: the token's name through a server, else the local user.
    registered_by: str
    created_at: float
    #: The aliases naming this version now, sorted.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Model:
    """A registered model: its newest version and its aliases (alias -> version)."""

    name: str
    created_at: float
    latest: ModelVersion
    aliases: Mapping[str, int] = field(default_factory=dict)


def entries_under(entries: Sequence[ArtifactEntry], path: str) -> list[tuple[str, ArtifactEntry]]:
    """(path relative to ``path``, entry) of the artifacts ``path`` names: the file itself, or every
    file under the directory ("" names them all), sorted by relative path."""
    if not path:
        return sorted(((e.path, e) for e in entries), key=_first)
    exact = [e for e in entries if e.path == path]
    if exact:
        return [(path.rsplit("/", 1)[-1], exact[0])]
    return sorted(((e.path[len(path) + 1:], e) for e in entries if e.path.startswith(path + "/")), key=_first)


def _first(pair: tuple[str, ArtifactEntry]) -> str:
    return pair[0]


def entries_digest(named: Sequence[tuple[str, ArtifactEntry]]) -> str:
    """sha256 of the lines "<relative path>\\0<content sha256>\\n" in relative-path order: changes
    when a file under the path is added, removed, renamed or rewritten."""
    import hashlib

    digest = hashlib.sha256()
    for relpath, entry in sorted(named, key=_first):
        digest.update(f"{relpath}\0{entry.sha256}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class IngestResult:
    run_number: int
    #: False when the batch had been applied before (nothing changed).
    applied: bool
