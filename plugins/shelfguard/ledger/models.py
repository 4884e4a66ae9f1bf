"""Ledger tables: the durable evidence promotion decisions are made from.

The schema is portable between SQLite (embedded runtime) and PostgreSQL
(production): Core types only, JSON through ``sa.JSON``, timestamps stored as
``DateTime(timezone=True)`` and always written in UTC. Constraint names come
from one naming convention so that Alembic migrations (including SQLite batch
migrations, which need named constraints) and the models agree exactly.

Nothing outside ``shelfguard.ledger`` should import this module: callers use
:class:`shelfguard.ledger.Ledger`, which returns plain records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: ABANDONED: the process running it died before it finished (see shelfguard.liveness).
OUTCOMES = ("RUNNING", "OK", "PROMOTED", "BLOCKED", "REJECTED", "FAILED", "ABANDONED")
GATE_STATUSES = ("pass", "fail", "warn")
DECISIONS = ("approved", "rejected")
APPROVAL_CHANNELS = ("policy", "hitl", "cli", "timeout")
ALIAS_ACTIONS = ("promote", "rollback", "canary_start", "canary_end")
#: A batch's life (write-audit-publish): landed by ingest, gated by the raw-data gate,
#: then published with the marts or blocked by a gate; a blocked batch may be purged.
BATCH_STATES = ("landed", "gated", "published", "blocked", "purged")
#: What a hash-chain entry records (see ``shelfguard.ledger.chain``).
CHAIN_KINDS = ("gate", "approval", "alias_move", "policy_approval")
#: How a policy was put in force: signed by an approver, or by the embedded setup
#: (only a development policy, where nobody decides, is approved that way).
POLICY_APPROVAL_CHANNELS = ("signed", "setup")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, allowed: tuple[str, ...]) -> sa.CheckConstraint:
    # The database refuses bad enum values too, so a writer that bypasses
    # Ledger (a manual fix in psql) cannot record an outcome nobody understands.
    values = ", ".join(f"'{value}'" for value in allowed)
    return sa.CheckConstraint(f"{column} IN ({values})", name=column)


class Base(DeclarativeBase):
    """Declarative base carrying the shared constraint naming convention."""

    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """One DAG run and what it used (invariants 1 and 5)."""

    __tablename__ = "runs"
    __table_args__ = (_one_of("outcome", OUTCOMES),)

    run_id: Mapped[str] = mapped_column(sa.String(), primary_key=True)
    dag_id: Mapped[str] = mapped_column(sa.String(), index=True)
    started_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(sa.String())
    blocked_gate: Mapped[str | None] = mapped_column(sa.String())
    message: Mapped[str | None] = mapped_column(sa.Text())
    triggered_by: Mapped[str | None] = mapped_column(sa.String())
    lineage: Mapped[dict[str, Any]] = mapped_column(sa.JSON())


class Artifact(Base):
    """A content-addressed file or folder a run produced or used."""

    __tablename__ = "artifacts"
    __table_args__ = (sa.UniqueConstraint("kind", "sha256"),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String())
    uri: Mapped[str] = mapped_column(sa.String())
    sha256: Mapped[str] = mapped_column(sa.String())
    produced_by_run: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    meta: Mapped[dict[str, Any]] = mapped_column(sa.JSON())


class GateResult(Base):
    """The verdict of one gate on one subject in one run (invariants 1 and 2)."""

    __tablename__ = "gate_results"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "gate", "subject"),
        _one_of("status", GATE_STATUSES),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.run_id"))
    gate: Mapped[str] = mapped_column(sa.String())
    subject: Mapped[str] = mapped_column(sa.String())
    status: Mapped[str] = mapped_column(sa.String())
    checks: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON())
    metrics: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    report_uri: Mapped[str | None] = mapped_column(sa.String())
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Approval(Base):
    """A decision on promoting one exact model + index pair (invariants 2 and 6)."""

    __tablename__ = "approvals"
    __table_args__ = (
        _one_of("decision", DECISIONS),
        _one_of("via", APPROVAL_CHANNELS),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    run_id: Mapped[str] = mapped_column(sa.ForeignKey("runs.run_id"), index=True)
    model_sha256: Mapped[str] = mapped_column(sa.String())
    index_sha256: Mapped[str] = mapped_column(sa.String())
    decision: Mapped[str] = mapped_column(sa.String())
    decided_by: Mapped[str] = mapped_column(sa.String())
    decided_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    comment: Mapped[str] = mapped_column(sa.Text())
    via: Mapped[str] = mapped_column(sa.String())
    policy_sha256: Mapped[str | None] = mapped_column(sa.String())
    #: The author's signed statement (DSSE envelope) for decisions made on the command line.
    attestation: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))


class Alias(Base):
    """Where a serving alias points now: always a model and its index (invariant 3)."""

    __tablename__ = "aliases"

    name: Mapped[str] = mapped_column(sa.String(), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer())
    model_artifact_id: Mapped[int] = mapped_column(sa.ForeignKey("artifacts.id"))
    index_artifact_id: Mapped[int] = mapped_column(sa.ForeignKey("artifacts.id"))
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(sa.String())

    # The ORM bumps ``version`` on every UPDATE and adds ``WHERE version = <old>``,
    # so a move computed from a stale read fails instead of overwriting a newer one.
    # (No ClassVar: DeclarativeBase types this attribute, and mypy forbids the override.)
    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012


class AliasHistory(Base):
    """Every alias move, promote or rollback, with who, why and what it replaced."""

    __tablename__ = "alias_history"
    # One row per version: a retried move can never write the same version twice.
    __table_args__ = (
        sa.UniqueConstraint("alias", "version"),
        _one_of("action", ALIAS_ACTIONS),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    alias: Mapped[str] = mapped_column(sa.ForeignKey("aliases.name"))
    version: Mapped[int] = mapped_column(sa.Integer())
    action: Mapped[str] = mapped_column(sa.String())
    model_artifact_id: Mapped[int] = mapped_column(sa.ForeignKey("artifacts.id"))
    index_artifact_id: Mapped[int] = mapped_column(sa.ForeignKey("artifacts.id"))
    previous_model_artifact_id: Mapped[int | None] = mapped_column(sa.ForeignKey("artifacts.id"))
    previous_index_artifact_id: Mapped[int | None] = mapped_column(sa.ForeignKey("artifacts.id"))
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"))
    moved_by: Mapped[str] = mapped_column(sa.String())
    moved_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(sa.Text())
    #: The author's signed statement, for a rollback made on the command line.
    attestation: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))


class IngestFile(Base):
    """One landed file loaded into one raw table, with its row accounting (invariant 4)."""

    __tablename__ = "ingest_files"
    __table_args__ = (sa.UniqueConstraint("table_name", "sha256"),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"), index=True)
    batch_id: Mapped[str] = mapped_column(sa.String(), index=True)
    file_name: Mapped[str] = mapped_column(sa.String())
    table_name: Mapped[str] = mapped_column(sa.String())
    sha256: Mapped[str] = mapped_column(sa.String())
    bytes: Mapped[int] = mapped_column(sa.BigInteger())
    rows_read: Mapped[int] = mapped_column(sa.BigInteger())
    rows_accepted: Mapped[int] = mapped_column(sa.BigInteger())
    rows_quarantined: Mapped[int] = mapped_column(sa.BigInteger())
    quarantine_by_reason: Mapped[dict[str, int]] = mapped_column(sa.JSON())
    extra_columns: Mapped[list[str]] = mapped_column(sa.JSON())
    ingested_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class Batch(Base):
    """One landed batch and where it stands (invariant 9): only published batches are read."""

    __tablename__ = "batches"
    __table_args__ = (_one_of("state", BATCH_STATES),)

    batch_id: Mapped[str] = mapped_column(sa.String(), primary_key=True)
    state: Mapped[str] = mapped_column(sa.String())
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"))
    gate: Mapped[str | None] = mapped_column(sa.String())
    reason: Mapped[str | None] = mapped_column(sa.Text())
    snapshot_id: Mapped[str | None] = mapped_column(sa.String())
    files: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON())
    landed_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class BatchEvent(Base):
    """Every change of a batch's state: which run or person moved it, and why."""

    __tablename__ = "batch_events"
    __table_args__ = (_one_of("state", BATCH_STATES),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    batch_id: Mapped[str] = mapped_column(sa.ForeignKey("batches.batch_id"), index=True)
    state: Mapped[str] = mapped_column(sa.String())
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"))
    actor: Mapped[str | None] = mapped_column(sa.String())
    reason: Mapped[str | None] = mapped_column(sa.Text())
    at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    #: The author's signed statement, for a purge made on the command line.
    attestation: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))


class PolicyVersion(Base):
    """The exact bytes of every policy a run pinned, keyed by their sha256 (invariant 9)."""

    __tablename__ = "policies"

    sha256: Mapped[str] = mapped_column(sa.String(), primary_key=True)
    content: Mapped[str] = mapped_column(sa.Text())
    source: Mapped[str] = mapped_column(sa.String())
    first_seen_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class PolicyApproval(Base):
    """A policy put in force: by whom, when, replacing which, with their signed statement.

    The policy in force is the one of the newest row; runs refuse any other file.
    """

    __tablename__ = "policy_approvals"
    __table_args__ = (_one_of("via", POLICY_APPROVAL_CHANNELS),)

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    policy_sha256: Mapped[str] = mapped_column(sa.ForeignKey("policies.sha256"), index=True)
    approved_by: Mapped[str] = mapped_column(sa.String())
    approved_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    via: Mapped[str] = mapped_column(sa.String())
    previous_sha256: Mapped[str | None] = mapped_column(sa.String())
    comment: Mapped[str] = mapped_column(sa.Text())
    attestation: Mapped[dict[str, Any]] = mapped_column(sa.JSON())


class Snapshot(Base):
    """A published, immutable snapshot of the marts: its warehouse schema and fingerprint."""

    __tablename__ = "snapshots"

    snapshot_id: Mapped[str] = mapped_column(sa.String(), primary_key=True)
    schema_name: Mapped[str] = mapped_column(sa.String())
    fingerprint: Mapped[str] = mapped_column(sa.String())
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"))
    batch_id: Mapped[str | None] = mapped_column(sa.String())
    tables: Mapped[dict[str, Any]] = mapped_column(sa.JSON())
    published_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), index=True)


class ChainEntry(Base):
    """One link of the hash chain over gate verdicts, approvals and alias moves.

    Append-only: ``ref_id`` is the row's id in the table its ``kind`` names, and
    ``row_hash`` commits to ``prev_hash`` and to the row's payload hash. The unique
    ``prev_hash`` lets no two entries follow the same one (the chain cannot fork).
    """

    __tablename__ = "chain"
    __table_args__ = (
        sa.UniqueConstraint("prev_hash"),
        _one_of("kind", CHAIN_KINDS),
    )

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String())
    ref_id: Mapped[int] = mapped_column(sa.Integer(), index=True)
    payload_sha256: Mapped[str] = mapped_column(sa.String())
    prev_hash: Mapped[str] = mapped_column(sa.String())
    row_hash: Mapped[str] = mapped_column(sa.String())
    recorded_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))


class RetentionPurge(Base):
    """Personal data deleted from the warehouse once its retention ended (policy
    ``privacy.raw_retention_days``): which table, how many rows, older than what."""

    __tablename__ = "retention_purges"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    purged_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    table_name: Mapped[str] = mapped_column(sa.String())
    rows: Mapped[int] = mapped_column(sa.BigInteger())
    cutoff: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    run_id: Mapped[str | None] = mapped_column(sa.ForeignKey("runs.run_id"), index=True)


class Collection(Base):
    """One ``shelfguard gc``: the stored models and indexes it removed, and its window."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(sa.Integer(), primary_key=True)
    collected_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    keep_days: Mapped[float] = mapped_column(sa.Float())
    removed: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON())
