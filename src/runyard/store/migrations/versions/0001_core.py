"""Core tables: projects, runs, labels, metric series, logs, artifacts, inputs, ingest cursors.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Blob = sa.LargeBinary().with_variant(postgresql.BYTEA(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("name", name="uq_projects_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "runs",
        sa.Column("number", sa.Integer, autoincrement=True),
        sa.Column("id", sa.String(26), nullable=False),
        sa.Column("project_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("command", Json, nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("queued_at", sa.Double, nullable=True),
        sa.Column("started_at", sa.Double, nullable=True),
        sa.Column("ended_at", sa.Double, nullable=True),
        sa.Column("heartbeat_at", sa.Double, nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("executor", sa.String(32), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("resources", Json, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("snapshot_id", sa.String(71), nullable=True),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("git_branch", sa.String(255), nullable=True),
        sa.Column("git_diff_ref", sa.String(71), nullable=True),
        sa.Column("parent_number", sa.Integer, nullable=True),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        sa.Column("config", Json, nullable=False),
        sa.Column("summary", Json, nullable=False),
        sa.Column("environment", Json, nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_runs"),
        sa.UniqueConstraint("id", name="uq_runs_id"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name="fk_runs_project_id_projects"),
        sa.ForeignKeyConstraint(
            ["parent_number"], ["runs.number"], name="fk_runs_parent_number_runs", ondelete="SET NULL"
        ),
        sa.CheckConstraint(
            "status IN ('queued','starting','running','finished','failed','stopped','timeout','lost')",
            name="ck_runs_status",
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_runs_project_number", "runs", ["project_id", "number"])
    op.create_index("ix_runs_name", "runs", ["name"])
    op.create_index("ix_runs_queue", "runs", ["status", "priority", "number"])
    op.create_index("ix_runs_parent", "runs", ["parent_number"])

    op.create_table(
        "run_labels",
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("run_number", "label", name="pk_run_labels"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_run_labels_run_number_runs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_run_labels_label", "run_labels", ["label", "run_number"])

    op.create_table(
        "metric_series",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("point_count", sa.BigInteger, nullable=False),
        sa.Column("first_step", sa.BigInteger, nullable=True),
        sa.Column("last_step", sa.BigInteger, nullable=True),
        sa.Column("last_value", sa.Double, nullable=True),
        sa.Column("last_time", sa.Double, nullable=True),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_series"),
        sa.UniqueConstraint("run_number", "key", name="uq_metric_series_run_number_key"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_metric_series_run_number_runs", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "metric_chunks",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("data", Blob, nullable=False),
        sa.PrimaryKeyConstraint("series_id", "ordinal", name="pk_metric_chunks"),
        sa.ForeignKeyConstraint(
            ["series_id"], ["metric_series.id"], name="fk_metric_chunks_series_id_metric_series",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "metric_blocks",
        sa.Column("series_id", sa.Integer, nullable=False),
        sa.Column("level", sa.SmallInteger, nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("first_step", sa.BigInteger, nullable=False),
        sa.Column("last_step", sa.BigInteger, nullable=False),
        sa.Column("point_count", sa.BigInteger, nullable=False),
        sa.Column("nan_count", sa.BigInteger, nullable=False),
        sa.Column("vmin", sa.Double, nullable=True),
        sa.Column("vmax", sa.Double, nullable=True),
        sa.Column("vsum", sa.Double, nullable=True),
        sa.Column("vlast", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("series_id", "level", "ordinal", name="pk_metric_blocks"),
        sa.ForeignKeyConstraint(
            ["series_id"], ["metric_series.id"], name="fk_metric_blocks_series_id_metric_series",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_metric_blocks_seek", "metric_blocks", ["series_id", "level", "last_step"])

    op.create_table(
        "log_lines",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log_lines"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_log_lines_run_number_runs", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_log_lines_run", "log_lines", ["run_number", "id"])

    op.create_table(
        "artifacts",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_ref", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_artifacts"),
        sa.UniqueConstraint("run_number", "path", name="uq_artifacts_run_number_path"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_artifacts_run_number_runs", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_artifacts_sha256", "artifacts", ["sha256"])

    op.create_table(
        "run_inputs",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source_run_number", sa.Integer, nullable=True),
        sa.Column("source_path", sa.String(1024), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("mount", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_run_inputs"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_run_inputs_run_number_runs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["source_run_number"], ["runs.number"], name="fk_run_inputs_source_run_number_runs",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint("kind IN ('artifact','dataset','path')", name="ck_run_inputs_kind"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_run_inputs_run", "run_inputs", ["run_number"])
    op.create_index("ix_run_inputs_sha256", "run_inputs", ["sha256"])
    op.create_index("ix_run_inputs_source", "run_inputs", ["source_run_number"])

    op.create_table(
        "ingest_cursors",
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("writer", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("run_number", "writer", name="pk_ingest_cursors"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_ingest_cursors_run_number_runs", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    for table in (
        "ingest_cursors", "run_inputs", "artifacts", "log_lines", "metric_blocks", "metric_chunks",
        "metric_series", "run_labels", "runs", "projects",
    ):
        op.drop_table(table)
