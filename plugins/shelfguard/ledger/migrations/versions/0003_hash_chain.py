"""hash chain: a tamper-evident record of gate verdicts, approvals and alias moves

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:00:00+00:00

Adds the append-only ``chain`` table (see docs/ledger.md, "Tamper evidence") and
chains the rows an existing ledger already holds: gate verdicts, approvals and
alias moves, each table in id order, the three interleaved by their timestamps
(``created_at``, ``decided_at``, ``moved_at``). A ledger migrated from 0002 then
verifies clean; rows edited before this migration are chained as they are now.

The payload hashing comes from ``shelfguard.ledger.chain``, whose format is frozen
(changing it would break every stored chain), so importing it here is safe.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import context, op

from shelfguard.ledger.chain import (
    GENESIS,
    alias_move_payload,
    approval_payload,
    entry_hash,
    gate_payload,
    payload_sha256,
)

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)

_gates = sa.table(
    "gate_results",
    sa.column("id", sa.Integer()),
    sa.column("run_id", sa.String()),
    sa.column("gate", sa.String()),
    sa.column("subject", sa.String()),
    sa.column("status", sa.String()),
    sa.column("checks", sa.JSON()),
    sa.column("metrics", sa.JSON()),
    sa.column("report_uri", sa.String()),
    sa.column("created_at", _TS),
)
_approvals = sa.table(
    "approvals",
    sa.column("id", sa.Integer()),
    sa.column("run_id", sa.String()),
    sa.column("model_sha256", sa.String()),
    sa.column("index_sha256", sa.String()),
    sa.column("decision", sa.String()),
    sa.column("decided_by", sa.String()),
    sa.column("decided_at", _TS),
    sa.column("comment", sa.Text()),
    sa.column("via", sa.String()),
    sa.column("policy_sha256", sa.String()),
)
_history = sa.table(
    "alias_history",
    sa.column("id", sa.Integer()),
    sa.column("alias", sa.String()),
    sa.column("version", sa.Integer()),
    sa.column("action", sa.String()),
    sa.column("model_artifact_id", sa.Integer()),
    sa.column("index_artifact_id", sa.Integer()),
    sa.column("previous_model_artifact_id", sa.Integer()),
    sa.column("previous_index_artifact_id", sa.Integer()),
    sa.column("run_id", sa.String()),
    sa.column("moved_by", sa.String()),
    sa.column("moved_at", _TS),
    sa.column("reason", sa.Text()),
)
_artifacts = sa.table("artifacts", sa.column("id", sa.Integer()), sa.column("sha256", sa.String()))
_chain = sa.table(
    "chain",
    sa.column("kind", sa.String()),
    sa.column("ref_id", sa.Integer()),
    sa.column("payload_sha256", sa.String()),
    sa.column("prev_hash", sa.String()),
    sa.column("row_hash", sa.String()),
    sa.column("recorded_at", _TS),
)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _entries(connection: sa.Connection) -> Iterator[tuple[datetime, int, str, int, str]]:
    """(timestamp, table order, kind, row id, payload hash) of every row, in chain order."""
    query = sa.select(_artifacts.c.id, _artifacts.c.sha256)
    shas: dict[int, str] = {
        row["id"]: row["sha256"] for row in connection.execute(query).mappings()
    }

    def rows(table: sa.TableClause) -> Iterator[dict[str, Any]]:
        query = sa.select(table).order_by(table.c.id)
        for row in connection.execute(query).mappings():
            yield {str(key): value for key, value in row.items()}

    def gates() -> Iterator[tuple[datetime, int, str, int, str]]:
        for row in rows(_gates):
            yield _utc(row["created_at"]), 0, "gate", row["id"], payload_sha256(gate_payload(row))

    def approvals() -> Iterator[tuple[datetime, int, str, int, str]]:
        for row in rows(_approvals):
            payload = payload_sha256(approval_payload(row))
            yield _utc(row["decided_at"]), 1, "approval", row["id"], payload

    def moves() -> Iterator[tuple[datetime, int, str, int, str]]:
        for row in rows(_history):
            payload = alias_move_payload(
                row, shas.get(row["model_artifact_id"]), shas.get(row["index_artifact_id"])
            )
            yield _utc(row["moved_at"]), 2, "alias_move", row["id"], payload_sha256(payload)

    # Each table stays in id order; heapq.merge interleaves them by timestamp.
    yield from heapq.merge(gates(), approvals(), moves(), key=lambda item: (item[0], item[1]))


def upgrade() -> None:
    op.create_table(
        "chain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("ref_id", sa.Integer(), nullable=False),
        sa.Column("payload_sha256", sa.String(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("row_hash", sa.String(), nullable=False),
        sa.Column("recorded_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain")),
        sa.UniqueConstraint("prev_hash", name=op.f("uq_chain_prev_hash")),
        sa.CheckConstraint(
            "kind IN ('gate', 'approval', 'alias_move')", name=op.f("ck_chain_kind")
        ),
    )
    op.create_index(op.f("ix_chain_ref_id"), "chain", ["ref_id"])
    if context.is_offline_mode():
        # Offline SQL for a DBA cannot read the rows to chain; Ledger.verify() then
        # reports every existing row as unchained until it is migrated online.
        return
    connection = op.get_bind()
    now = datetime.now(UTC)
    prev = GENESIS
    chained: list[dict[str, Any]] = []
    for _, _, kind, ref_id, payload in _entries(connection):
        row_hash = entry_hash(prev, kind, ref_id, payload)
        chained.append(
            {
                "kind": kind,
                "ref_id": ref_id,
                "payload_sha256": payload,
                "prev_hash": prev,
                "row_hash": row_hash,
                "recorded_at": now,
            }
        )
        prev = row_hash
    # Inserted one by one, in order, so that ids follow the chain.
    for entry in chained:
        connection.execute(sa.insert(_chain).values(**entry))


def downgrade() -> None:
    op.drop_index(op.f("ix_chain_ref_id"), table_name="chain")
    op.drop_table("chain")
