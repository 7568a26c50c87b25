"""The model registry: models by name, their numbered versions (each an immutable pointer to a run's
artifacts under a path, with a digest of them), and aliases naming one version each.

Nothing existed before this revision: the tables start empty.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("latest_version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "model_versions",
        sa.Column("model_id", sa.Integer),
        sa.Column("version", sa.Integer, autoincrement=False),
        sa.Column("run_number", sa.Integer, nullable=False),
        sa.Column("run_id", sa.String(26), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("file_count", sa.Integer, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("registered_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("model_id", "version", name="pk_model_versions"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_model_versions_model_id_models",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_number"], ["runs.number"], name="fk_model_versions_run_number_runs"),
    )
    op.create_index("ix_model_versions_run", "model_versions", ["run_number"])
    op.create_table(
        "model_aliases",
        sa.Column("model_id", sa.Integer),
        sa.Column("alias", sa.String(100)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("model_id", "alias", name="pk_model_aliases"),
        sa.ForeignKeyConstraint(["model_id", "version"], ["model_versions.model_id", "model_versions.version"],
                                name="fk_model_aliases_model_id_model_versions", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("model_aliases")
    op.drop_index("ix_model_versions_run", "model_versions")
    op.drop_table("model_versions")
    op.drop_table("models")
