"""Alert rules and events (with "seen" marks), and hashed API tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("project_id", sa.Integer, nullable=True),
        sa.Column("run_number", sa.Integer, nullable=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("action", sa.String(16), nullable=False, server_default="notify"),
        sa.Column("notify", Json, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default="1"),
        sa.Column("source", sa.String(1024), nullable=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_rules"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_alert_rules_project_id_projects", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_alert_rules_run_number_runs", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alert_rules_project", "alert_rules", ["project_id"])
    op.create_table(
        "alert_events",
        sa.Column("id", BigId, autoincrement=True),
        sa.Column("rule_id", sa.Integer, nullable=True),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("time", sa.Double, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("metric", sa.String(256), nullable=True),
        sa.Column("step", sa.BigInteger, nullable=True),
        sa.Column("value", sa.Double, nullable=True),
        sa.Column("seen_at", sa.Double, nullable=True),
        sa.Column("delivery", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alert_events"),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["alert_rules.id"], name="fk_alert_events_rule_id_alert_rules", ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_alert_events_run_number_runs", ondelete="CASCADE"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alert_events_run", "alert_events", ["run_number", "id"])
    op.create_index("ix_alert_events_unseen", "alert_events", ["seen_at"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("project_id", sa.Integer, nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("last_used_at", sa.Double, nullable=True),
        sa.Column("revoked_at", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_api_tokens_project_id_projects", ondelete="CASCADE"
        ),
        sa.CheckConstraint("role IN ('reader','writer','admin')", name="ck_api_tokens_role"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("alert_events")
    op.drop_table("alert_rules")
