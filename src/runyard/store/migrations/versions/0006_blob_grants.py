"""Content a project-limited token uploaded, so that it may then refer to it: a token sees and
attaches only content its project's runs refer to, or that it proved it holds by uploading it.

Nothing is granted before this revision: a limited token uploads what it wants to refer to again.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_grants",
        sa.Column("project_id", sa.Integer),
        sa.Column("sha256", sa.String(64)),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("project_id", "sha256", name="pk_blob_grants"),
        sa.ForeignKeyConstraint(
            ["project_id"], ["projects.id"], name="fk_blob_grants_project_id_projects", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("blob_grants")
