"""Artifacts remember their file's mode in the run (the executable bit of a script), so that
`runyard cp` keeps it.

Artifacts recorded before this revision have none (NULL): a copy of one gets the copy's own mode.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("artifacts", sa.Column("mode", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("mode")
