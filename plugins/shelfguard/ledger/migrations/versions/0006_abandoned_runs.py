"""abandoned runs: a run whose process died is ABANDONED, not RUNNING forever

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 00:00:00+00:00

Admits the outcome ``ABANDONED`` in ``runs`` (see ``shelfguard.liveness``).
"""

from __future__ import annotations

from collections.abc import Sequence

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


def downgrade() -> None:
    op.execute("UPDATE runs SET outcome = 'FAILED' WHERE outcome = 'ABANDONED'")
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint(op.f("ck_runs_outcome"), type_="check")
        batch.create_check_constraint(op.f("ck_runs_outcome"), f"outcome IN ({_BEFORE})")
