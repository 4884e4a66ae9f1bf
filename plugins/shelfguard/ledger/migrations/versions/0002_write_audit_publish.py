"""write-audit-publish: batch states, pinned policies, published snapshots

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 00:00:00+00:00

Adds ``batches`` and ``batch_events`` (a batch is landed, gated, then published or
blocked, and a blocked one may be purged), ``policies`` (the bytes of every policy a
run pinned, by sha256) and ``snapshots`` (the published, immutable mart snapshots).
Existing ledgers gain the tables empty: batches ingested before this revision have no
state, and the next run of ``catalog_refresh`` publishes a first snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES = "state IN ('landed', 'gated', 'published', 'blocked', 'purged')"


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("gate", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("snapshot_id", sa.String(), nullable=True),
        sa.Column("files", sa.JSON(), nullable=False),
        _timestamp("landed_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("batch_id", name=op.f("pk_batches")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_batches_run_id_runs")),
        sa.CheckConstraint(_STATES, name=op.f("ck_batches_state")),
    )
    op.create_table(
        "batch_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("actor", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        _timestamp("at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_events")),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.batch_id"], name=op.f("fk_batch_events_batch_id_batches")
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.run_id"], name=op.f("fk_batch_events_run_id_runs")
        ),
        sa.CheckConstraint(_STATES, name=op.f("ck_batch_events_state")),
    )
    op.create_index(op.f("ix_batch_events_batch_id"), "batch_events", ["batch_id"])
    op.create_table(
        "policies",
        sa.Column("sha256", sa.String(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        _timestamp("first_seen_at"),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_policies")),
    )
    op.create_table(
        "snapshots",
        sa.Column("snapshot_id", sa.String(), nullable=False),
        sa.Column("schema_name", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=True),
        sa.Column("batch_id", sa.String(), nullable=True),
        sa.Column("tables", sa.JSON(), nullable=False),
        _timestamp("published_at"),
        sa.PrimaryKeyConstraint("snapshot_id", name=op.f("pk_snapshots")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.run_id"], name=op.f("fk_snapshots_run_id_runs")),
    )
    op.create_index(op.f("ix_snapshots_published_at"), "snapshots", ["published_at"])


def downgrade() -> None:
    for table in ("snapshots", "policies", "batch_events", "batches"):
        op.drop_table(table)
