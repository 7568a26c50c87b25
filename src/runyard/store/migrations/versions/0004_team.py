"""Team mode: leases (agents, the alert outbox), which agent holds each launched run and the stop
requests for it, and what alert rules remember per run.

Runs claimed before this revision have no claim: the agent of the home that launched one adopts it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100)),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("acquired_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=False),
        sa.Column("info", Json, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_table(
        "run_claims",
        sa.Column("run_number", sa.Integer),
        sa.Column("agent", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("claimed_at", sa.Double, nullable=False),
        sa.Column("submitted_at", sa.Double, nullable=True),
        sa.Column("stop_requested_at", sa.Double, nullable=True),
        sa.Column("stop_sent_at", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("run_number", name="pk_run_claims"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_run_claims_run_number_runs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_run_claims_agent", "run_claims", ["agent"])
    op.create_table(
        "alert_state",
        sa.Column("rule_id", sa.Integer, autoincrement=False),
        sa.Column("run_number", sa.Integer),
        sa.Column("state", Json, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("rule_id", "run_number", name="pk_alert_state"),
        sa.ForeignKeyConstraint(
            ["run_number"], ["runs.number"], name="fk_alert_state_run_number_runs", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_index("ix_run_claims_agent", "run_claims")
    op.drop_table("run_claims")
    op.drop_table("leases")
