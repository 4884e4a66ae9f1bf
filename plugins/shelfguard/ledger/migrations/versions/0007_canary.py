"""canary: the alias moves that start and end a canary

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 00:00:00+00:00

Admits the actions ``canary_start`` and ``canary_end`` in ``alias_history``: the
``canary`` alias names the approved challenger pair the search service answers a share
of sessions with (see ``shelfguard.model.canary``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "'promote', 'rollback'"


def upgrade() -> None:
    with op.batch_alter_table("alias_history") as batch:
        batch.drop_constraint(op.f("ck_alias_history_action"), type_="check")
        batch.create_check_constraint(
            op.f("ck_alias_history_action"), f"action IN ({_BEFORE}, 'canary_start', 'canary_end')"
        )


def downgrade() -> None:
    op.execute("DELETE FROM alias_history WHERE action IN ('canary_start', 'canary_end')")
    op.execute("DELETE FROM aliases WHERE name = 'canary'")
    with op.batch_alter_table("alias_history") as batch:
        batch.drop_constraint(op.f("ck_alias_history_action"), type_="check")
        batch.create_check_constraint(op.f("ck_alias_history_action"), f"action IN ({_BEFORE})")
