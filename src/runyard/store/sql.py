"""SqlStore: the ``Store`` protocol on SQLite (WAL) or PostgreSQL, through SQLAlchemy Core.

Constructing a store does no I/O. Opening a home (creating it, migrating SQLite) is ``home.py``'s
job, done explicitly at the CLI or SDK entry. Every write runs in one transaction; on SQLite it
takes the write lock at BEGIN (``BEGIN IMMEDIATE``), on PostgreSQL the rows it changes are locked.

This module holds the transactions; the SQL of each noun is in a module of its own, as functions
over a connection (projects_sql, runs_sql, series_sql and series_info_sql, logs_sql, artifacts_sql,
blobs_sql, inputs_sql, alerts_sql, ingest_sql, gc_sql) or over the store where they open
transactions themselves (claims_sql, alert_state_sql). A method here opens one transaction and
calls them, so that the pieces of one change (an ingested batch) share it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runyard.errors import Unstorable
from runyard.names import validate_metric_key, validate_relpath
from runyard.store import (
    alert_state_sql,
    alerts_sql,
    artifacts_sql,
    blobs_sql,
    claims_sql,
    gc_sql,
    ingest_sql,
    inputs_sql,
    limits,
    logs_sql,
    models_sql,
    notify,
    projects_sql,
    runs_sql,
    series_info_sql,
)
from runyard.store.api import (
    AlertEvent,
    AlertRule,
    ArtifactEntry,
    Claim,
    IngestBatch,
    IngestResult,
    Lease,
    LogLine,
    Model,
    ModelVersion,
    NewRun,
    Page,
    Project,
    Run,
    RunInput,
    RunPatch,
    RunQuery,
    SeriesInfo,
)
from runyard.store.engine import IMMEDIATE
from runyard.types import RunStatus

if TYPE_CHECKING:
    # The series modules load numpy (0.1 s): only what reads or writes points imports them, so that
    # `runyard ls` and the other commands listing runs do not pay for it.
    from runyard.store.series import Envelope, Points


class SqlStore:
    """Runs, metric series, logs, the artifact index and alerts, in one SQL database."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time,
                 chunk_points: int | None = None) -> None:
        self.engine = engine
        self.clock = clock
        #: Points per chunk (None: series.CHUNK_POINTS); tests make it small so that few points
        #: exercise many chunks and levels.
        self.chunk_points = chunk_points
        #: The NOTIFY channel of this store's schema (PostgreSQL; see notify.py), read on first use.
        self._channel: str | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions -----------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                conn = conn.execution_options(**{IMMEDIATE: True})
                with conn.begin():
                    if self.dialect != "postgresql":
                        yield conn
                    else:  # other processes hear what this transaction changed when it commits
                        notify.begin(conn)
                        try:
                            yield conn
                            if self._channel is None:
                                self._channel = notify.current_channel(conn)
                            notify.send(conn, self._channel)
                        finally:
                            notify.discard(conn)
        except (sa.exc.DBAPIError, OverflowError) as e:
            # A value or statement the database refuses whenever it is sent is the caller's to
            # know about (the server answers 422), not a failure to retry.
            reason = limits.refusal(e)
            if reason is None:
                raise
            raise Unstorable(f"the database cannot store this: {reason}") from e

    # -- projects ---------------------------------------------------------------------------------

    def ensure_project(self, name: str) -> Project:
        with self._write() as conn:
            projects_sql.project_id(conn, name, self.clock)
        return next(p for p in self.list_projects() if p.name == name)

    def list_projects(self) -> list[Project]:
        with self._read() as conn:
            return projects_sql.list_projects(conn)

    # -- runs -------------------------------------------------------------------------------------

    def create_run(self, new: NewRun) -> Run:
        with self._write() as conn:
            number = runs_sql.insert_run(conn, new, self.clock)
            return runs_sql.fetch_run(conn, number)

    def resolve(self, ref: str | int, project: str | None = None) -> int:
        """A run's number from a reference (number, name or id prefix); with ``project``, only among
        that project's runs (a token limited to it learns nothing of the others)."""
        with self._read() as conn:
            return runs_sql.resolve_ref(conn, ref, project)

    def get_run(self, ref: str | int, project: str | None = None) -> Run:
        with self._read() as conn:
            number = runs_sql.resolve_ref(conn, ref, project)
            return runs_sql.fetch_run(conn, number)

    def list_runs(self, query: RunQuery) -> Page[Run]:
        with self._read() as conn:
            return runs_sql.list_runs(conn, query)

    def activity(self, numbers: Sequence[int]) -> dict[int, tuple[Any, ...]]:
        """A mark per run that changes with its points, log and state (see runs_sql.activity)."""
        with self._read() as conn:
            return runs_sql.activity(conn, numbers)

    def children_of(self, number: int) -> list[Run]:
        with self._read() as conn:
            return runs_sql.children_of(conn, number)

    def update_run(self, number: int, patch: RunPatch) -> Run:
        with self._write() as conn:
            runs_sql.update_run(conn, number, patch, self.clock)
            return runs_sql.fetch_run(conn, number)

    def append_note(self, number: int, text: str) -> Run:
        """Add a paragraph to the run's notes."""
        with self._write() as conn:
            runs_sql.update_run(conn, number, RunPatch(), self.clock, notes_append=[text])
            return runs_sql.fetch_run(conn, number)

    def set_labels(self, number: int, add: Sequence[str] = (), remove: Sequence[str] = ()) -> Run:
        with self._write() as conn:
            runs_sql.require_run(conn, number)
            runs_sql.set_labels(conn, number, add, remove)
            return runs_sql.fetch_run(conn, number)

    # -- metric series ----------------------------------------------------------------------------

    def append_points(self, run: int, series: Mapping[str, Points]) -> None:
        """Add points to several series of a run in one transaction."""
        from runyard.store import series_sql

        for key in series:
            validate_metric_key(key)
        with self._write() as conn:
            runs_sql.require_run(conn, run)
            series_sql.append_points(conn, run, series, self.chunk_points)

    def list_series(self, run: int) -> list[SeriesInfo]:
        with self._read() as conn:
            runs_sql.require_run(conn, run)
            return series_info_sql.list_series(conn, run)

    def history(self, run: int, key: str, start: int | None = None, end: int | None = None) -> Points:
        from runyard.store import series_sql

        with self._read() as conn:
            return series_sql.history(conn, series_sql.existing_row(conn, run, key), start, end)

    def envelope(self, run: int, key: str, buckets: int = 1000, start: int | None = None,
                 end: int | None = None) -> Envelope:
        from runyard.store import series_sql

        series_sql.check_window(buckets, start, end)
        with self._read() as conn:
            return series_sql.envelope(conn, series_sql.existing_row(conn, run, key), buckets, start, end)

    # -- logs -------------------------------------------------------------------------------------

    def append_logs(self, run: int, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        with self._write() as conn:
            runs_sql.require_run(conn, run)
            logs_sql.append(conn, run, lines)

    def tail_logs(self, run: int, count: int) -> list[LogLine]:
        """The last ``count`` lines of the run's log, in order."""
        with self._read() as conn:
            runs_sql.require_run(conn, run)
            return logs_sql.tail(conn, run, count)

    def read_logs(self, run: int, after: int = 0, limit: int = 1000) -> list[LogLine]:
        with self._read() as conn:
            runs_sql.require_run(conn, run)
            return logs_sql.read(conn, run, after, limit)

    # -- artifacts and lineage --------------------------------------------------------------------

    def record_artifact(self, run: int, path: str, size: int, sha256: str, content_ref: str) -> ArtifactEntry:
        validate_relpath(path)
        now = self.clock()
        # An upload says no mode: a mode recorded for an earlier file at this path is not its.
        values = {"size": size, "sha256": sha256, "content_ref": content_ref, "created_at": now, "mode": None}
        with self._write() as conn:
            runs_sql.require_run(conn, run)
            artifacts_sql.record(conn, run, path, values)
        return ArtifactEntry(path, size, sha256, content_ref, now)

    def list_artifacts(self, run: int, prefix: str = "") -> list[ArtifactEntry]:
        with self._read() as conn:
            runs_sql.require_run(conn, run)
            return artifacts_sql.list_artifacts(conn, run, prefix)

    def visible_content(self, project: str, shas: Sequence[str]) -> set[str]:
        """Those of ``shas`` that a token limited to ``project`` may see (see blobs_sql.py)."""
        with self._read() as conn:
            return blobs_sql.visible(conn, project, shas)

    def grant_content(self, project: str, sha256: str) -> None:
        """A token limited to ``project`` uploaded this content: it may refer to it from now on."""
        with self._write() as conn:
            blobs_sql.grant(conn, project, sha256, self.clock)

    def add_input(self, run: int, item: RunInput) -> None:
        with self._write() as conn:
            runs_sql.require_run(conn, run)
            inputs_sql.add(conn, run, item)

    def inputs_of(self, run: int) -> list[RunInput]:
        """What ``run`` consumed."""
        with self._read() as conn:
            return inputs_sql.inputs_of(conn, run)

    def consumers_of(self, sha256: str) -> list[RunInput]:
        """Which runs consumed this content."""
        with self._read() as conn:
            return inputs_sql.consumers_of(conn, sha256)

    def consumers_of_run(self, run: int) -> list[RunInput]:
        """Which runs consumed an artifact of ``run``."""
        with self._read() as conn:
            return inputs_sql.consumers_of_run(conn, run)

    # -- the model registry (see models_sql) ------------------------------------------------------

    def register_model(self, name: str, run: int, path: str, description: str = "", registered_by: str = "",
                       aliases: Sequence[str] = ()) -> ModelVersion:
        """Record the next version of model ``name``: run ``run``'s artifacts under ``path`` (a file or
        directory; "" for all), with ``aliases`` moved to it."""
        with self._write() as conn:
            return models_sql.register(conn, name, run, path, description, registered_by, aliases, self.clock)

    def set_model_alias(self, name: str, alias: str, version: int) -> ModelVersion:
        """Point ``alias`` at ``version`` of model ``name``, moving it from the version it named."""
        with self._write() as conn:
            return models_sql.set_alias(conn, name, alias, version, self.clock)

    def remove_model_alias(self, name: str, alias: str) -> int:
        """Remove an alias; the version it named."""
        with self._write() as conn:
            return models_sql.remove_alias(conn, name, alias)

    def model_version(self, name: str, selector: str | None = None) -> ModelVersion:
        """The version of ``name`` that ``selector`` names: None or "latest", a number, or an alias."""
        with self._read() as conn:
            return models_sql.get_version(conn, name, selector)

    def model_versions(self, name: str) -> list[ModelVersion]:
        """Every version of model ``name``, newest first."""
        with self._read() as conn:
            return models_sql.list_versions(conn, name)

    def list_models(self) -> list[Model]:
        with self._read() as conn:
            return models_sql.list_models(conn)

    def registered_runs(self, numbers: Sequence[int]) -> dict[int, list[str]]:
        """Of ``numbers``, the runs model versions point at: run -> ["NAME@VERSION", ...]."""
        with self._read() as conn:
            return models_sql.registered(conn, numbers)

    # -- the queue --------------------------------------------------------------------------------

    def runs_with_status(self, statuses: Sequence[RunStatus]) -> list[Run]:
        """Runs in these states, highest priority first, then oldest first (the queue's order)."""
        with self._read() as conn:
            return runs_sql.with_status(conn, statuses)

    # -- reclaiming disk: runyard gc and rm (see gc_sql) ------------------------------------------

    def content_references(self, runs_only: Sequence[int] | None = None) -> tuple[set[str], set[str]]:
        """(content SHA-256s that runs refer to, their snapshot ids): of every run, or of ``runs_only``."""
        with self._read() as conn:
            return gc_sql.content_references(conn, runs_only)

    def ended_before(self, cutoff: float | None) -> list[tuple[int, str]]:
        """(number, id) of runs in a final state that ended before ``cutoff`` (None: all of them)."""
        with self._read() as conn:
            return gc_sql.ended_before(conn, cutoff)

    def delete_runs(self, numbers: Sequence[int]) -> list[int]:
        """Delete finished runs and everything recorded about them; a queued or running one is kept."""
        with self._write() as conn:
            return gc_sql.delete_runs(conn, numbers)

    def granted_content(self) -> list[str]:
        """The content some project holds an upload grant for (blob_grants)."""
        with self._read() as conn:
            return gc_sql.granted(conn)

    def forget_grants(self, shas: Sequence[str]) -> int:
        """Forget every project's upload grant for ``shas`` (content no longer stored); the rows deleted."""
        with self._write() as conn:
            return gc_sql.drop_grants(conn, shas)

    # -- team mode: leases, claims, stop requests (see claims_sql) ---------------------------------

    def lease_clock(self, conn: Connection) -> float:
        """Now, for leases: the database's clock on PostgreSQL, so that agents on machines whose clocks
        disagree judge a lease alike; this store's own clock on SQLite (one machine), or when a test
        gave the store a clock of its own."""
        if conn.dialect.name == "postgresql" and self.clock is time.time:
            return float(conn.execute(sa.select(sa.func.extract("epoch", sa.func.clock_timestamp()))).scalar_one())
        return self.clock()

    def take_lease(self, name: str, holder: str, seconds: float, host: str | None = None,
                   info: Mapping[str, Any] | None = None) -> bool:
        """Take or renew the lease ``name`` for ``seconds``; False while another holder has it."""
        return claims_sql.take_lease(self, name, holder, seconds, host, info or {})

    def release_lease(self, name: str, holder: str, keep: bool = False) -> None:
        """Give the lease up now (``keep``: leave its row, expired, so what it says stays known)."""
        claims_sql.release_lease(self, name, holder, keep)

    def leases(self, prefix: str) -> list[tuple[Lease, bool]]:
        """Leases named ``prefix...``, each with whether it is live."""
        return claims_sql.list_leases(self, prefix)

    def claim(self, number: int, gpus: Sequence[int], agent: str, host: str | None) -> Run | None:
        """Claim a queued run for ``agent`` (starting, its GPUs recorded); None if it was taken."""
        return claims_sql.claim(self, number, gpus, agent, host)

    def mark_submitted(self, number: int, agent: str) -> bool:
        """Record that ``agent`` hands its run to a supervisor; False means: do not (see claims_sql)."""
        return claims_sql.mark_submitted(self, number, agent)

    def get_claim(self, number: int) -> Claim | None:
        return claims_sql.get_claim(self, number)

    def held_by(self, agent: str) -> list[tuple[Run, Claim]]:
        """Starting and running runs that ``agent`` holds."""
        return claims_sql.held_by(self, agent)

    def orphaned_runs(self) -> list[tuple[Run, Claim]]:
        """Starting and running runs whose holder's lease has expired."""
        return claims_sql.orphaned(self)

    def release_orphan(self, number: int, agent: str, lost_message: str,
                       holder_gone: bool = True) -> RunStatus | None:
        """Queue again, stop or mark lost a run whose holder ``agent`` is gone (see claims_sql)."""
        return claims_sql.release_orphan(self, number, agent, lost_message, holder_gone)

    def take_over_run(self, number: int, gone: str, agent: str, host: str | None) -> bool:
        """Hold, as ``agent``, an active run whose holder ``gone`` is gone (see claims_sql)."""
        return claims_sql.take_over(self, number, gone, agent, host)

    def adopt_run(self, number: int, agent: str, host: str | None, submitted: bool) -> bool:
        return claims_sql.adopt(self, number, agent, host, submitted)

    def unclaimed_runs(self, executor: str) -> list[Run]:
        return claims_sql.unclaimed(self, executor)

    def stop_if_queued(self, number: int, message: str) -> bool:
        return claims_sql.stop_if_queued(self, number, message)

    def request_stop(self, number: int) -> Claim | None:
        """Ask the run's holder to stop it; its claim, or None if no agent holds it."""
        return claims_sql.request_stop(self, number)

    def stop_sent(self, number: int) -> None:
        claims_sql.stop_sent(self, number)

    # -- ingest ---------------------------------------------------------------------------------

    def ingest_cursor(self, run_id: str, writer: str) -> int:
        """Highest sequence number of ``writer`` applied to run ``run_id`` (-1: none, or no such run)."""
        return self.ingest_state(run_id, writer)[0]

    def ingest_state(self, run_id: str, writer: str) -> tuple[int, int | None, str | None]:
        """One query for an ingest route: (cursor of ``writer`` or -1, the run's number, its project),
        the last two None when no run has this id."""
        with self._read() as conn:
            return ingest_sql.state(conn, run_id, writer)

    def ingest(self, batch: IngestBatch) -> IngestResult:
        """Apply a batch of spool records in one transaction, exactly once (see ``IngestBatch``)."""
        try:
            with self._write() as conn:
                return ingest_sql.apply_batch(conn, batch, self.clock, self.chunk_points)
        except Unstorable as e:
            raise Unstorable(f"records {batch.first_seq}..{batch.last_seq} of writer {batch.writer} of run "
                             f"{batch.run_id} can never be applied: {e}") from e

    def mark_lost(self, run_id: str, message: str) -> bool:
        """Mark a run lost unless it already ended; True if it was marked."""
        with self._write() as conn:
            return runs_sql.mark_lost(conn, run_id, message, self.clock)

    # -- alerts (see alerts_sql and alert_state_sql) ---------------------------------------------

    def add_alert_rule(self, rule: AlertRule) -> AlertRule:
        with self._write() as conn:
            return alerts_sql.insert_rule(conn, rule, self.clock)

    def alert_rules_stamp(self) -> tuple[int, int]:
        """(how many rules, highest id): changes whenever a rule is added or removed, for readers
        that keep the rules in memory (one cheap query instead of reading them all)."""
        with self._read() as conn:
            return alerts_sql.rules_stamp(conn)

    def list_alert_rules(self, project: str | None = None, run: int | None = None) -> list[AlertRule]:
        with self._read() as conn:
            return alerts_sql.list_rules(conn, project, run)

    def remove_alert_rule(self, rule_id: int) -> bool:
        """Delete a rule (its past events stay, without it); False if there was none."""
        with self._write() as conn:
            return alerts_sql.remove_rule(conn, rule_id)

    def add_alert_event(self, event: AlertEvent) -> AlertEvent:
        with self._write() as conn:
            runs_sql.require_run(conn, event.run)
            return alerts_sql.insert_event(conn, event)

    def alert_states(self, run: int) -> dict[int, tuple[dict[str, Any], int]]:
        """What each rule remembers about ``run``: rule id -> (state, version). See alert_state_sql."""
        return alert_state_sql.read(self, run)

    def save_alert_states(self, run: int, states: Mapping[int, tuple[Mapping[str, Any], int | None]],
                          events: Sequence[AlertEvent]) -> list[int]:
        """Write changed rule states (compare-and-set on the version read) and the alerts that fired,
        all or nothing; returns the rules another process changed meanwhile ([] when written)."""
        return alert_state_sql.write(self, run, states, events)

    def last_activity(self, runs: Sequence[int]) -> dict[int, float]:
        """When each run last logged a metric point or a log line."""
        return claims_sql.last_activity(self, runs)

    def list_alert_events(self, run: int | None = None, unseen_only: bool = False) -> list[AlertEvent]:
        with self._read() as conn:
            return alerts_sql.list_events(conn, run, unseen_only)

    def alert_events_after(self, event_id: int, since: float = 0.0, limit: int = 1000) -> list[AlertEvent]:
        """Events with an id above ``event_id`` and a time from ``since`` on, oldest first (the outbox)."""
        with self._read() as conn:
            return alerts_sql.events_after(conn, event_id, since, limit)

    def set_alert_delivery(self, event_id: int, delivery: Mapping[str, Any]) -> None:
        """Record how an event's delivery stands (channels still pending, whether its stop was done)."""
        with self._write() as conn:
            alerts_sql.set_delivery(conn, event_id, delivery)

    def mark_alerts_seen(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        now = self.clock()
        with self._write() as conn:
            alerts_sql.mark_seen(conn, ids, now)

    def status_counts(self, since: float, project: str | None = None) -> dict[str, int]:
        """For ``runyard status``: runs running and queued, runs that failed (or were lost or timed
        out) since ``since``, and alerts nobody has seen; of one project if given."""
        with self._read() as conn:
            return alerts_sql.status_counts(conn, since, project)
