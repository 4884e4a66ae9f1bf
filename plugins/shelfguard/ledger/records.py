"""What the ledger hands back: frozen records, verification reports and its errors.

Every method of the ledger returns these, never ORM objects: a caller cannot hold a
session open by accident, and nothing it does to a record reaches the database.
:func:`_record` builds one from a mapped row, column by field name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, TypeVar

from shelfguard.ledger.models import (
    ALIAS_ACTIONS,
    APPROVAL_CHANNELS,
    BATCH_STATES,
    DECISIONS,
    GATE_STATUSES,
    OUTCOMES,
    AliasHistory,
    Approval,
    Artifact,
    Batch,
    BatchEvent,
    GateResult,
    IngestFile,
    PolicyApproval,
    RetentionPurge,
    Run,
    Snapshot,
)

__all__ = [
    "ALIAS_ACTIONS",
    "APPROVAL_CHANNELS",
    "BATCH_STATES",
    "DECISIONS",
    "FINAL_OUTCOMES",
    "GATE_STATUSES",
    "OUTCOMES",
    "AliasMove",
    "AliasRecord",
    "ApprovalRecord",
    "ArtifactRecord",
    "BatchEventRecord",
    "BatchRecord",
    "ChainProblem",
    "GateRecord",
    "IngestFileRecord",
    "LedgerError",
    "LedgerTampered",
    "PolicyApprovalRecord",
    "RetentionPurgeRecord",
    "RunRecord",
    "SnapshotRecord",
    "VerifyReport",
]

FINAL_OUTCOMES = tuple(outcome for outcome in OUTCOMES if outcome != "RUNNING")


class LedgerError(RuntimeError):
    """The ledger refused a write or cannot serve a request."""


@dataclass(frozen=True)
class ChainProblem:
    """One row that does not match the hash chain: which table, which row, what is wrong."""

    table: str
    row_id: str
    problem: str

    def __str__(self) -> str:
        return f"{self.table} row {self.row_id}: {self.problem}"


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`Ledger.verify` found: ``ok`` when the decision record is intact."""

    entries: int
    head: str | None
    problems: list[ChainProblem]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def first(self) -> ChainProblem | None:
        """The first bad row (chain order first, then table by table), or None."""
        return self.problems[0] if self.problems else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (``shelfguard verify --json``)."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head": self.head,
            "first_problem": None if self.first is None else vars(self.first),
            "problems": [vars(p) for p in self.problems],
        }


class LedgerTampered(LedgerError):
    """The ledger failed verification: a chained row was edited, added or deleted outside it."""

    def __init__(self, report: VerifyReport) -> None:
        self.report = report
        more = len(report.problems) - 1
        super().__init__(
            f"ledger failed verification: {report.first}"
            + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")
        )


@dataclass(frozen=True)
class RunRecord:
    """One DAG run: its outcome and the lineage of everything it used."""

    run_id: str
    dag_id: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    blocked_gate: str | None
    message: str | None
    triggered_by: str | None
    lineage: dict[str, Any]


@dataclass(frozen=True)
class ArtifactRecord:
    """A content-addressed artifact (model, index, dataset, report, dbt manifest...)."""

    id: int
    kind: str
    uri: str
    sha256: str
    produced_by_run: str | None
    created_at: datetime
    meta: dict[str, Any]


@dataclass(frozen=True)
class GateRecord:
    """The latest verdict of one gate on one subject within one run."""

    id: int
    run_id: str
    gate: str
    subject: str
    status: str
    checks: list[dict[str, Any]]
    metrics: dict[str, Any]
    report_uri: str | None
    created_at: datetime


@dataclass(frozen=True)
class ApprovalRecord:
    """A decision on promoting one exact model + index pair."""

    id: int
    run_id: str
    model_sha256: str
    index_sha256: str
    decision: str
    decided_by: str
    decided_at: datetime
    comment: str
    via: str
    policy_sha256: str | None
    #: The author's signed statement (DSSE envelope), for decisions made on the command line.
    attestation: dict[str, Any] | None = None


@dataclass(frozen=True)
class PolicyApprovalRecord:
    """A policy put in force: who approved it, when, in place of which, and their signature."""

    id: int
    policy_sha256: str
    approved_by: str
    approved_at: datetime
    via: str
    previous_sha256: str | None
    comment: str
    attestation: dict[str, Any]


@dataclass(frozen=True)
class AliasRecord:
    """Where an alias points now; ``model`` and ``index`` always move together."""

    name: str
    version: int
    model: ArtifactRecord
    index: ArtifactRecord
    run_id: str | None
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class AliasMove:
    """One row of an alias's history: a promote or a rollback."""

    id: int
    alias: str
    version: int
    action: str
    model_artifact_id: int
    index_artifact_id: int
    previous_model_artifact_id: int | None
    previous_index_artifact_id: int | None
    run_id: str | None
    moved_by: str
    moved_at: datetime
    reason: str
    attestation: dict[str, Any] | None = None


@dataclass(frozen=True)
class IngestFileRecord:
    """One landed file loaded into one table, with where each of its rows went.

    Build one without ``id`` and ``ingested_at`` and pass it to
    :meth:`Ledger.record_ingested_file`; the ledger fills both in.
    """

    batch_id: str
    file_name: str
    table_name: str
    sha256: str
    bytes: int
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)
    extra_columns: list[str] = field(default_factory=list)
    run_id: str | None = None
    id: int | None = None
    ingested_at: datetime | None = None


@dataclass(frozen=True)
class BatchEventRecord:
    """One change of a batch's state."""

    state: str
    run_id: str | None
    actor: str | None
    reason: str | None
    at: datetime
    attestation: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchRecord:
    """A landed batch, its state and its files (``file_name``, ``table``, ``sha256``, counts)."""

    batch_id: str
    state: str
    run_id: str | None
    gate: str | None
    reason: str | None
    snapshot_id: str | None
    files: list[dict[str, Any]]
    landed_at: datetime
    updated_at: datetime
    events: list[BatchEventRecord] = field(default_factory=list)

    def count(self, key: str) -> int:
        """The sum of one count (``rows_read``, ``rows_accepted``...) over the batch's files."""
        return sum(int(f.get(key) or 0) for f in self.files)


@dataclass(frozen=True)
class SnapshotRecord:
    """A published snapshot of the marts: where it lives and what its content hashes to."""

    snapshot_id: str
    schema_name: str
    fingerprint: str
    run_id: str | None
    batch_id: str | None
    tables: dict[str, Any]
    published_at: datetime


@dataclass(frozen=True)
class RetentionPurgeRecord:
    """Personal data deleted once its retention ended: rows of one table older than cutoff."""

    id: int
    purged_at: datetime
    table_name: str
    rows: int
    cutoff: datetime
    run_id: str | None


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes (it stores no offset) and PostgreSQL
    # returns them in the session's time zone; records are always UTC-aware.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


_Record = TypeVar("_Record")


def _plain(value: Any) -> Any:
    """A column value as a record holds it: datetimes UTC-aware, JSON values copied."""
    if isinstance(value, datetime):
        return _utc(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _record(kind: type[_Record], row: Any, **given: Any) -> _Record:
    """The frozen record ``kind`` of a mapped row: each field from the column of its name
    (or from ``given``), as :func:`_plain` hands it back."""
    values = {
        f.name: given[f.name] if f.name in given else _plain(getattr(row, f.name))
        for f in fields(kind)  # type: ignore[arg-type]
    }
    return kind(**values)


def _run_record(row: Run) -> RunRecord:
    return _record(RunRecord, row)


def _artifact_record(row: Artifact) -> ArtifactRecord:
    return _record(ArtifactRecord, row)


def _gate_record(row: GateResult) -> GateRecord:
    return _record(GateRecord, row)


def _approval_record(row: Approval) -> ApprovalRecord:
    return _record(ApprovalRecord, row)


def _policy_approval_record(row: PolicyApproval) -> PolicyApprovalRecord:
    return _record(PolicyApprovalRecord, row)


def _alias_move(row: AliasHistory) -> AliasMove:
    return _record(AliasMove, row)


def _ingest_record(row: IngestFile) -> IngestFileRecord:
    return _record(IngestFileRecord, row)


def _batch_record(row: Batch, events: Sequence[BatchEvent] = ()) -> BatchRecord:
    return _record(BatchRecord, row, events=[_record(BatchEventRecord, e) for e in events])


def _retention_record(row: RetentionPurge) -> RetentionPurgeRecord:
    return _record(RetentionPurgeRecord, row)


def _snapshot_record(row: Snapshot) -> SnapshotRecord:
    return _record(SnapshotRecord, row)
