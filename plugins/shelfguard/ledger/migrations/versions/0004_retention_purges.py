"""retention purges: the record of personal data deleted when its retention ended

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 00:00:00+00:00

Adds ``retention_purges``: every purge of quarantined lines that hold personal fields,
once older than the policy's ``privacy.raw_retention_days`` (which table, how many
rows, the cutoff, the run that purged them). Existing ledgers gain the table empty.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retention_purges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purged_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("table_name", sa.String(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_retention_purges")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_retention_purges_run_id_runs")
        ),
    )
    op.create_index(op.f("ix_retention_purges_run_id"), "retention_purges", ["run_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_retention_purges_run_id"), table_name="retention_purges")
    op.drop_table("retention_purges")
