"""The metadata schema: SQLAlchemy Core tables, the same on SQLite and PostgreSQL.

Defining tables does no work: no engine, no connection, nothing at import beyond building
``MetaData``. Alembic migrations in ``migrations/versions`` create exactly these tables; a test
compares the migrated database with this module on both engines.

Conventions: times are seconds since the epoch as doubles (charts and APIs want numbers); JSON
columns are JSONB on PostgreSQL and TEXT on SQLite; a run is referenced by its ``number``, a small
integer people type, assigned by the database and never reused.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import BYTEA, JSONB

from runyard.store.revision import SCHEMA_REVISION

__all__ = ["SCHEMA_REVISION", "metadata"]

# Names for constraints, so migrations can refer to them identically on both engines.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
Blob = LargeBinary().with_variant(BYTEA(), "postgresql")
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

projects = Table(
    "projects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("description", Text, nullable=False, server_default=""),
    Column("created_at", Double, nullable=False),
    sqlite_autoincrement=True,
)

runs = Table(
    "runs",
    metadata,
    # The number people type ("runyard cp 62:model"): assigned by the database, never reused.
    Column("number", Integer, primary_key=True, autoincrement=True),
    # The run's identity everywhere else: a ULID made by whoever created the run, sortable by time.
    Column("id", String(26), nullable=False, unique=True),
    Column("project_id", Integer, ForeignKey("projects.id"), nullable=False),
    Column("name", String(200), nullable=True),
    Column("status", String(16), nullable=False),
    Column("status_message", Text, nullable=True),
    # argv as a JSON list; a shell command line is ["sh", "-c", line].
    Column("command", Json, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("queued_at", Double, nullable=True),
    Column("started_at", Double, nullable=True),
    Column("ended_at", Double, nullable=True),
    Column("heartbeat_at", Double, nullable=True),
    Column("exit_code", Integer, nullable=True),
    Column("executor", String(32), nullable=True),
    # What it executes (runyard.types.RunKind): "script" or "notebook".
    Column("kind", String(16), nullable=False, server_default="script"),
    Column("host", String(255), nullable=True),
    # {"gpus": 1, "cpus": 4, "memory": "16G", "timeout": 7200, "machine": "a100", ...}
    Column("resources", Json, nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("snapshot_id", String(71), nullable=True),
    Column("git_commit", String(64), nullable=True),
    Column("git_branch", String(255), nullable=True),
    # The uncommitted diff is an artifact: this is its content reference in the artifact store.
    Column("git_diff_ref", String(71), nullable=True),
    Column("parent_number", Integer, ForeignKey("runs.number", ondelete="SET NULL"), nullable=True),
    Column("notes", Text, nullable=False, server_default=""),
    Column("config", Json, nullable=False),
    Column("summary", Json, nullable=False),
    # Environment the run was recorded in: python version, packages, argv of the SDK process, ...
    Column("environment", Json, nullable=False),
    # How `runyard run` launched it (shell or argv, env, pip, mounts, params): what a rerun repeats.
    Column("launch", Json, nullable=True),
    CheckConstraint(
        "status IN ('queued','starting','running','finished','failed','stopped','timeout','lost')",
        name="status",
    ),
    sqlite_autoincrement=True,
)
Index("ix_runs_project_number", runs.c.project_id, runs.c.number)
Index("ix_runs_name", runs.c.name)
# The queue: the scheduler claims the highest priority, then the oldest, queued run.
Index("ix_runs_queue", runs.c.status, runs.c.priority, runs.c.number)
Index("ix_runs_parent", runs.c.parent_number)

run_labels = Table(
    "run_labels",
    metadata,
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), primary_key=True),
    Column("label", String(100), primary_key=True),
)
Index("ix_run_labels_label", run_labels.c.label, run_labels.c.run_number)

metric_series = Table(
    "metric_series",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), nullable=False),
    Column("key", String(256), nullable=False),
    Column("point_count", BigInteger, nullable=False),
    Column("first_step", BigInteger, nullable=True),
    Column("last_step", BigInteger, nullable=True),
    Column("last_value", Double, nullable=True),
    Column("last_time", Double, nullable=True),
    # Number of level-0 blocks (chunks); the next chunk's ordinal.
    Column("chunk_count", Integer, nullable=False),
    UniqueConstraint("run_number", "key"),
    sqlite_autoincrement=True,
)

# Points, packed by the thousand: one row per chunk of a series, ordered by step (see series.py).
metric_chunks = Table(
    "metric_chunks",
    metadata,
    Column("series_id", Integer, ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True),
    Column("ordinal", Integer, primary_key=True),
    Column("data", Blob, nullable=False),
)

# Exact aggregates over contiguous step ranges. Level 0: one row per chunk. Level k > 0: one row per
# FANOUT consecutive level k-1 blocks. An envelope query reads O(buckets) of these, not the points.
metric_blocks = Table(
    "metric_blocks",
    metadata,
    Column("series_id", Integer, ForeignKey("metric_series.id", ondelete="CASCADE"), primary_key=True),
    Column("level", SmallInteger, primary_key=True),
    Column("ordinal", Integer, primary_key=True),
    Column("first_step", BigInteger, nullable=False),
    Column("last_step", BigInteger, nullable=False),
    Column("point_count", BigInteger, nullable=False),
    Column("nan_count", BigInteger, nullable=False),
    # NULL stands for NaN (SQLite stores NaN as NULL; PostgreSQL would keep it, we keep one rule).
    Column("vmin", Double, nullable=True),
    Column("vmax", Double, nullable=True),
    Column("vsum", Double, nullable=True),
    Column("vlast", Double, nullable=True),
)
Index("ix_metric_blocks_seek", metric_blocks.c.series_id, metric_blocks.c.level, metric_blocks.c.last_step)

log_lines = Table(
    "log_lines",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), nullable=False),
    Column("stream", String(16), nullable=False),
    Column("time", Double, nullable=False),
    Column("text", Text, nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_log_lines_run", log_lines.c.run_number, log_lines.c.id)

artifacts = Table(
    "artifacts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), nullable=False),
    # Validated POSIX path relative to the run, e.g. "outputs/model.pt".
    Column("path", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    # Where the bytes live, as the artifact store names them ("sha256:<hex>" on disk).
    Column("content_ref", String(255), nullable=False),
    Column("created_at", Double, nullable=False),
    # The file's permission bits in the run (0o755 for a script), so a copy keeps them; NULL when
    # the writer did not say (an SDK upload, a run recorded before revision 0005).
    Column("mode", Integer, nullable=True),
    UniqueConstraint("run_number", "path"),
    sqlite_autoincrement=True,
)
Index("ix_artifacts_sha256", artifacts.c.sha256)

# What a run consumed: another run's artifact, a dataset or a mounted directory, by content hash,
# so lineage walks both ways (what made this? what used this?).
run_inputs = Table(
    "run_inputs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("source_run_number", Integer, ForeignKey("runs.number", ondelete="SET NULL"), nullable=True),
    Column("source_path", String(1024), nullable=True),
    Column("sha256", String(64), nullable=False),
    Column("mount", String(1024), nullable=True),
    CheckConstraint("kind IN ('artifact','dataset','path')", name="kind"),
    sqlite_autoincrement=True,
)
Index("ix_run_inputs_run", run_inputs.c.run_number)
Index("ix_run_inputs_sha256", run_inputs.c.sha256)
Index("ix_run_inputs_source", run_inputs.c.source_run_number)

# Content a project's token uploaded (PUT /blobs): holding the bytes proves it may refer to them,
# until a run of the project does (see blobs_sql.py). An unlimited token needs no grant.
blob_grants = Table(
    "blob_grants",
    metadata,
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("sha256", String(64), primary_key=True),
    Column("created_at", Double, nullable=False),
)

# Idempotent ingest: per run and writer (one spool), the highest sequence number applied.
ingest_cursors = Table(
    "ingest_cursors",
    metadata,
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), primary_key=True),
    Column("writer", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), nullable=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(16), nullable=False),
    # The rule's parameters: metric, value, by, steps, epsilon, for, ... as written by the user.
    Column("spec", Json, nullable=False),
    Column("action", String(16), nullable=False, server_default="notify"),
    Column("notify", Json, nullable=False),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("source", String(1024), nullable=True),
    Column("created_at", Double, nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_alert_rules_project", alert_rules.c.project_id)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("rule_id", Integer, ForeignKey("alert_rules.id", ondelete="SET NULL"), nullable=True),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), nullable=False),
    Column("time", Double, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Column("metric", String(256), nullable=True),
    Column("step", BigInteger, nullable=True),
    Column("value", Double, nullable=True),
    # Attention: an event stays marked until a person has seen it.
    Column("seen_at", Double, nullable=True),
    Column("delivery", Json, nullable=False),
    sqlite_autoincrement=True,
)
Index("ix_alert_events_run", alert_events.c.run_number, alert_events.c.id)
Index("ix_alert_events_unseen", alert_events.c.seen_at)

# Team mode (many agents, one database). A lease is held by one holder until ``expires_at`` (the
# database's clock) unless renewed: ``agent:<id>`` says an agent is alive (its ``info`` is its
# machine: host, slots, GPUs, CPUs, memory); ``outbox`` says which process acts on fired alerts.
leases = Table(
    "leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(64), nullable=False),
    Column("host", String(255), nullable=True),
    Column("acquired_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("info", Json, nullable=False),
)

# Which agent holds a launched run: only it acts on the run, until its ``agent:<id>`` lease expires.
# ``submitted_at``: handed to a supervisor (a run claimed and never submitted goes back to the queue).
# ``stop_requested_at``: someone asked to stop it; its holder carries that out (``stop_sent_at``).
run_claims = Table(
    "run_claims",
    metadata,
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), primary_key=True),
    Column("agent", String(64), nullable=False),
    Column("host", String(255), nullable=True),
    Column("claimed_at", Double, nullable=False),
    Column("submitted_at", Double, nullable=True),
    Column("stop_requested_at", Double, nullable=True),
    Column("stop_sent_at", Double, nullable=True),
)
Index("ix_run_claims_agent", run_claims.c.agent)

# What an alert rule remembers about a run (best value, idle since, last fired), so that restarts
# and several ingesters on one database say each alert once. ``rule_id`` is negative for the rules
# a run's launch carried (they are in no table); ``version`` makes each write a compare-and-set.
alert_state = Table(
    "alert_state",
    metadata,
    Column("rule_id", Integer, primary_key=True, autoincrement=False),
    Column("run_number", Integer, ForeignKey("runs.number", ondelete="CASCADE"), primary_key=True),
    Column("state", Json, nullable=False),
    Column("version", Integer, nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("project_id", Integer, ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
    # A token is shown once; only its SHA-256 is kept.
    Column("token_sha256", String(64), nullable=False, unique=True),
    Column("prefix", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
    CheckConstraint("role IN ('reader','writer','admin')", name="role"),
    sqlite_autoincrement=True,
)

# The model registry (models_sql.py): a model is a name; each version an immutable pointer to the
# artifacts of one run under one path, with a digest of what they were when it was registered.
# ``latest_version`` is the last number handed out: incrementing it (a row lock on PostgreSQL, the
# write lock on SQLite) is how concurrent registrations get distinct numbers.
models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("latest_version", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    sqlite_autoincrement=True,
)

# A registered run is kept by `runyard gc` and `rm` (gc_sql.delete_runs): no ON DELETE here.
model_versions = Table(
    "model_versions",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id", ondelete="CASCADE"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("run_number", Integer, ForeignKey("runs.number"), nullable=False),
    Column("run_id", String(26), nullable=False),
    # The file or directory of the run's artifacts the version points at ("" for all of them).
    Column("path", String(1024), nullable=False),
    # sha256 over the sorted (relative path, content sha256) of the entries under ``path``.
    Column("digest", String(64), nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("registered_by", String(200), nullable=False),
    Column("created_at", Double, nullable=False),
)
Index("ix_model_versions_run", model_versions.c.run_number)

# An alias names exactly one version of its model; setting it again moves it.
model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_id", Integer, primary_key=True),
    Column("alias", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", Double, nullable=False),
    ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                         ondelete="CASCADE"),
)
