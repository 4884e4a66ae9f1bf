"""abandoned runs and collections: ABANDONED runs; what `shelfguard gc` removed

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 00:00:00+00:00

Admits the outcome ``ABANDONED`` in ``runs`` (see ``shelfguard.liveness``), and adds
``collections``: each ``shelfguard gc`` and the stored models and indexes it removed
(see ``shelfguard.model.objects``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "'RUNNING', 'OK', 'PROMOTED', 'BLOCKED', 'REJECTED', 'FAILED'"


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_outcome"), type_="check")
        batch.create_check_constraint(
            op.f("ck_runs_outcome"), f"outcome IN ({_BEFORE}, 'ABANDONED')"
        )
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("keep_days", sa.Float(), nullable=False),
        sa.Column("removed", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
    )


def downgrade() -> None:
    op.drop_table("collections")
    op.execute("UPDATE runs SET outcome = 'FAILED' WHERE outcome = 'ABANDONED'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_outcome"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_outcome"), f"outcome IN ({_BEFORE})")
