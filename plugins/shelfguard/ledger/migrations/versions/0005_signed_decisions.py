"""signed decisions: signature envelopes on decisions, and recorded policy approvals

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 00:00:00+00:00

Adds a nullable ``attestation`` (a DSSE envelope: the signed statement, the public
key, the signature; see ``shelfguard.signing``) to ``approvals``, ``alias_history``
and ``batch_events``, so that a decision made on the command line carries the
signature of its author; and the ``policy_approvals`` table, where every policy put
in force is recorded with the signed approval of who put it there. Policy approvals
join the hash chain (a new chain kind). Rows written before this revision stay
unsigned and verify as they did.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SIGNED_TABLES = ("approvals", "alias_history", "batch_events")


def upgrade() -> None:
    for table in _SIGNED_TABLES:
        op.add_column(table, sa.Column("attestation", sa.JSON(none_as_null=True), nullable=True))
    op.create_table(
        "policy_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_sha256", sa.String(), nullable=False),
        sa.Column("approved_by", sa.String(), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("via", sa.String(), nullable=False),
        sa.Column("previous_sha256", sa.String(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("attestation", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["policy_sha256"],
            ["policies.sha256"],
            name=op.f("fk_policy_approvals_policy_sha256_policies"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_approvals")),
        sa.CheckConstraint("via IN ('signed', 'setup')", name=op.f("ck_policy_approvals_via")),
    )
    op.create_index(
        op.f("ix_policy_approvals_policy_sha256"), "policy_approvals", ["policy_sha256"]
    )
    with op.batch_alter_table("chain") as batch:
        batch.drop_constraint(op.f("ck_chain_kind"), type_="check")
        batch.create_check_constraint(
            op.f("ck_chain_kind"), "kind IN ('gate', 'approval', 'alias_move', 'policy_approval')"
        )


def downgrade() -> None:
    op.execute("DELETE FROM chain WHERE kind = 'policy_approval'")
    with op.batch_alter_table("chain") as batch:
        batch.drop_constraint(op.f("ck_chain_kind"), type_="check")
        batch.create_check_constraint(
            op.f("ck_chain_kind"), "kind IN ('gate', 'approval', 'alias_move')"
        )
    op.drop_index(op.f("ix_policy_approvals_policy_sha256"), table_name="policy_approvals")
    op.drop_table("policy_approvals")
    for table in reversed(_SIGNED_TABLES):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("attestation")
