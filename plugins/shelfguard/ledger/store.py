"""The governance ledger: runs, artifacts, gate verdicts, approvals and aliases.

Promotion reads its evidence from here rather than from Airflow task states
(invariant 2), so every write is idempotent on its natural key (invariant 7)
and every alias move is one transaction with its history row (invariant 3).

All methods return frozen records, never ORM objects: a caller cannot hold a
session open by accident, and nothing it does to a record reaches the database.
SQLite (embedded runtime, one file shared by Airflow task processes and the
CLI) and PostgreSQL (production) behave the same.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from shelfguard import signing
from shelfguard.ledger.chain import (
    CHAIN_TABLES,
    GENESIS,
    alias_move_payload,
    approval_payload,
    entry_hash,
    gate_payload,
    payload_sha256,
    policy_approval_payload,
)
from shelfguard.ledger.models import (
    ALIAS_ACTIONS,
    APPROVAL_CHANNELS,
    BATCH_STATES,
    DECISIONS,
    GATE_STATUSES,
    OUTCOMES,
    POLICY_APPROVAL_CHANNELS,
    Alias,
    AliasHistory,
    Approval,
    Artifact,
    Base,
    Batch,
    BatchEvent,
    ChainEntry,
    Collection,
    GateResult,
    IngestFile,
    PolicyApproval,
    PolicyVersion,
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
    "MIGRATIONS_DIR",
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
    "Ledger",
    "LedgerError",
    "LedgerTampered",
    "PolicyApprovalRecord",
    "RetentionPurgeRecord",
    "RunRecord",
    "SnapshotRecord",
    "VerifyReport",
    "alembic_config",
]

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
FINAL_OUTCOMES = tuple(outcome for outcome in OUTCOMES if outcome != "RUNNING")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Serialises concurrent ``migrate()`` calls on PostgreSQL (every process calls it
# on start); any constant works as long as nothing else uses it.
_PG_MIGRATION_LOCK = 0x5348454C46475244
# Serialises appends to the hash chain on PostgreSQL (SQLite's BEGIN IMMEDIATE
# already serialises every writer); taken first in the transaction, before any row lock.
_PG_CHAIN_LOCK = 0x5348454C46434841
_WRITE_OPTION = "shelfguard_write"
_ALEMBIC_LOCK = threading.Lock()

_T = TypeVar("_T")


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


def alembic_config() -> Config:
    """Alembic configuration for the ledger migrations, built in code (no alembic.ini).

    Set ``sqlalchemy.url`` on it to run Alembic commands (``revision
    --autogenerate``, ``history``...) against a ledger database directly.
    """
    config = Config()
    # ConfigParser treats "%" as interpolation, and a checkout path may contain one.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes (it stores no offset) and PostgreSQL
    # returns them in the session's time zone; records are always UTC-aware.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise LedgerError(f"{what} {value!r} is not one of: {', '.join(allowed)}")


def _check_json(what: str, value: _T) -> _T:
    # PostgreSQL's json type rejects NaN and Infinity that SQLite would store, so
    # refuse them on both backends rather than let the two disagree.
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"{what} must be JSON-serialisable without NaN/Infinity: {exc}") from exc
    return value


def _check_counts(record: IngestFileRecord) -> None:
    counts = {
        "bytes": record.bytes,
        "rows_read": record.rows_read,
        "rows_accepted": record.rows_accepted,
        "rows_quarantined": record.rows_quarantined,
        **{f"quarantine_by_reason[{k!r}]": v for k, v in record.quarantine_by_reason.items()},
    }
    negative = {name: count for name, count in counts.items() if count < 0}
    if negative:
        raise LedgerError(f"{record.file_name}: counts must not be negative: {negative}")
    # Invariant 4: every row read is accounted for as accepted or quarantined.
    if record.rows_read != record.rows_accepted + record.rows_quarantined:
        raise LedgerError(
            f"{record.file_name}: rows_read={record.rows_read} but rows_accepted="
            f"{record.rows_accepted} + rows_quarantined={record.rows_quarantined} "
            f"= {record.rows_accepted + record.rows_quarantined}"
        )


def _columns(row: Base) -> dict[str, Any]:
    """A mapped row's column values by name (what the chain payloads read)."""
    return {attr.key: getattr(row, attr.key) for attr in sa.inspect(row).mapper.column_attrs}


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


# Which state may follow which: a blocked or purged batch delivered again is landed anew
# and judged again; a published batch stays published when the same content lands again.
_BATCH_MOVES = {
    "landed": {"gated", "blocked", "landed"},
    "gated": {"published", "blocked", "landed", "gated"},
    "published": {"published"},
    "blocked": {"purged", "landed", "gated", "blocked"},
    "purged": {"landed", "purged"},
}


def _create_engine(url: str) -> sa.Engine:
    try:
        backend = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as exc:
        raise LedgerError(f"cannot parse the ledger URL: {exc}") from exc
    if backend not in ("sqlite", "postgresql"):
        raise LedgerError(f"ledger database {backend!r} is not supported: use sqlite or postgresql")
    engine = sa.create_engine(url, pool_pre_ping=True)
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (see _on_begin); the driver's own
        # transaction handling skips SELECTs, so reads would not be repeatable.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # Airflow task processes and the CLI share the file: wait for a
            # lock instead of failing at once with "database is locked".
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # Readers (the UI, the CLI) keep working while a task writes.
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A writer takes the write lock up front: a deferred transaction that
        # upgrades from reading to writing gets SQLITE_BUSY immediately, without
        # the busy timeout, when another process wrote in between.
        writing = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _set_sqlite_foreign_keys(connection: sa.Connection, enabled: bool) -> None:
    # The pragma is ignored inside a transaction, and any statement sent through
    # SQLAlchemy would begin one first; so it goes straight to the driver.
    driver = cast(Any, connection.connection.driver_connection)
    if driver is not None:  # None once the connection was invalidated by an error
        driver.execute(f"PRAGMA foreign_keys = {'ON' if enabled else 'OFF'}")


class Ledger:
    """The governance ledger on one database (a SQLAlchemy URL: sqlite or postgresql)."""

    def __init__(self, url: str) -> None:
        """Connect lazily to ``url``; call :meth:`migrate` before the first use."""
        self._engine = _create_engine(url)
        self._dialect = self._engine.dialect.name
        self._read_sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self._engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False
        )

    def __repr__(self) -> str:
        return f"Ledger({self._engine.url!r})"

    @property
    def engine(self) -> sa.Engine:
        """The underlying engine, for tests and diagnostics; write through the methods."""
        return self._engine

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; a no-op when it is already there.

        Safe to call on every start, from several processes at once: on SQLite
        the write lock, on PostgreSQL an advisory lock, makes later callers wait
        and then find nothing to do.
        """
        # Alembic keeps its running context in module globals, so two threads of
        # one process must not run it at the same time, even on different databases.
        with _ALEMBIC_LOCK, self._engine.connect() as connection:
            if self._dialect == "sqlite":
                # Batch migrations copy a table and drop the original; with foreign
                # keys enforced that drop would cascade or fail.
                _set_sqlite_foreign_keys(connection, False)
            try:
                self._upgrade(connection.execution_options(**{_WRITE_OPTION: True}))
            finally:
                if self._dialect == "sqlite":
                    _set_sqlite_foreign_keys(connection, True)

    def _upgrade(self, connection: sa.Connection) -> None:
        with connection.begin():
            if self._dialect == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if self._dialect == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise LedgerError(f"migration left dangling foreign keys: {broken}")

    def dispose(self) -> None:
        """Close every pooled connection (call before a process exits or forks)."""
        self._engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    def _insert(
        self, entity: type[Base], values: Mapping[str, Any]
    ) -> postgresql.Insert | sqlite.Insert:
        # ON CONFLICT is the race-free way to make a write idempotent: two
        # processes inserting the same key never produce two rows or an error.
        if self._dialect == "postgresql":
            return postgresql.insert(entity).values(dict(values))
        return sqlite.insert(entity).values(dict(values))

    def _require_run(self, session: Session, run_id: str, *, lock: bool = False) -> Run:
        # Locking (FOR UPDATE on PostgreSQL; SQLite's write lock already covers
        # it) is for read-modify-write of the run row or of rows keyed on it.
        query = sa.select(Run).where(Run.run_id == run_id)
        row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
        if row is None:
            raise LedgerError(f"unknown run {run_id!r}: call start_run first")
        return row

    # runs

    def start_run(
        self,
        run_id: str,
        dag_id: str,
        *,
        triggered_by: str | None = None,
        lineage: Mapping[str, object] | None = None,
    ) -> RunRecord:
        """Record that a run started; calling it again for the same run is safe.

        A repeated call keeps ``started_at`` and the first ``triggered_by``,
        merges ``lineage``, and sets the outcome back to RUNNING only while the
        run has not finished. A ``run_id`` already used by another DAG is refused.
        """
        items = _check_json("lineage", dict(lineage or {}))
        with self._writing() as session:
            insert = self._insert(
                Run,
                {
                    "run_id": run_id,
                    "dag_id": dag_id,
                    "started_at": _now(),
                    "outcome": "RUNNING",
                    "triggered_by": triggered_by,
                    "lineage": items,
                },
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["run_id"]))
            run = self._require_run(session, run_id, lock=True)
            if run.dag_id != dag_id:
                raise LedgerError(
                    f"run {run_id!r} belongs to DAG {run.dag_id!r}, not {dag_id!r}: "
                    "run ids must be unique across DAGs"
                )
            if run.finished_at is None:
                run.outcome = "RUNNING"
            if run.triggered_by is None:
                run.triggered_by = triggered_by
            if items:
                run.lineage = {**run.lineage, **items}
            session.flush()
            return _run_record(run)

    def update_lineage(self, run_id: str, **items: object) -> None:
        """Merge ``items`` into the run's lineage; a key given again is overwritten."""
        merged = _check_json("lineage", dict(items))
        with self._writing() as session:
            run = self._require_run(session, run_id, lock=True)
            run.lineage = {**run.lineage, **merged}

    def finish_run(
        self,
        run_id: str,
        outcome: str,
        *,
        blocked_gate: str | None = None,
        message: str | None = None,
    ) -> RunRecord:
        """Record how a run ended; finishing it again with the same outcome changes nothing.

        ``outcome`` is one of :data:`FINAL_OUTCOMES`; BLOCKED requires the gate
        that blocked (invariant 1).
        """
        _check_choice("outcome", outcome, FINAL_OUTCOMES)
        if outcome == "BLOCKED" and not blocked_gate:
            raise LedgerError(f"run {run_id!r}: outcome BLOCKED needs the blocked_gate")
        with self._writing() as session:
            run = self._require_run(session, run_id, lock=True)
            unchanged = run.finished_at is not None and (
                run.outcome,
                run.blocked_gate,
                run.message,
            ) == (outcome, blocked_gate, message)
            if not unchanged:
                run.outcome = outcome
                run.blocked_gate = blocked_gate
                run.message = message
                run.finished_at = _now()
                session.flush()
            return _run_record(run)

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run, or None if it was never started."""
        with self._reading() as session:
            run = session.get(Run, run_id)
            return None if run is None else _run_record(run)

    def artifacts(self, kinds: Sequence[str] = ()) -> list[ArtifactRecord]:
        """Every artifact (of ``kinds``, when given), oldest first."""
        query = sa.select(Artifact).order_by(Artifact.id)
        if kinds:
            query = query.where(Artifact.kind.in_(list(kinds)))
        with self._reading() as session:
            return [_artifact_record(row) for row in session.scalars(query)]

    def record_collection(self, removed: Sequence[Mapping[str, Any]], *, keep_days: float) -> None:
        """Record a ``shelfguard gc`` that removed these stored objects."""
        with self._writing() as session:
            session.add(
                Collection(
                    collected_at=_now(),
                    keep_days=float(keep_days),
                    removed=_check_json("removed", [dict(r) for r in removed]),
                )
            )

    def collections(self) -> list[dict[str, Any]]:
        """Every recorded collection (when, window, what it removed), oldest first."""
        with self._reading() as session:
            return [
                {
                    "collected_at": _utc(row.collected_at).isoformat(),
                    "keep_days": row.keep_days,
                    "removed": list(row.removed),
                }
                for row in session.scalars(sa.select(Collection).order_by(Collection.id))
            ]

    def run_of_request(self, dag_id: str, request_id: str) -> RunRecord | None:
        """The recent run of ``dag_id`` started for this request id (the embedded runner's)."""
        return next(
            (
                r
                for r in self.recent_runs(limit=50, dag_id=dag_id)
                if r.lineage.get("request_id") == request_id
            ),
            None,
        )

    def running_runs(self) -> list[RunRecord]:
        """Every run the ledger still calls ``RUNNING``, oldest first."""
        query = sa.select(Run).where(Run.outcome == "RUNNING").order_by(Run.started_at)
        with self._reading() as session:
            return [_run_record(row) for row in session.scalars(query)]

    def recent_runs(self, limit: int = 20, dag_id: str | None = None) -> list[RunRecord]:
        """The latest ``limit`` runs (of one DAG, if given), newest first."""
        if limit < 1:
            raise LedgerError(f"limit must be at least 1, got {limit}")
        query = sa.select(Run).order_by(Run.started_at.desc(), Run.run_id.desc()).limit(limit)
        if dag_id is not None:
            query = query.where(Run.dag_id == dag_id)
        with self._reading() as session:
            return [_run_record(run) for run in session.scalars(query)]

    # artifacts

    def record_artifact(
        self,
        kind: str,
        uri: str,
        sha256: str,
        *,
        produced_by_run: str | None = None,
        meta: Mapping[str, object] | None = None,
    ) -> ArtifactRecord:
        """Register an artifact by content; the same (kind, sha256) returns the existing row."""
        if not kind or not sha256:
            raise LedgerError("an artifact needs a kind and a sha256")
        details = _check_json("meta", dict(meta or {}))
        with self._writing() as session:
            if produced_by_run is not None:
                self._require_run(session, produced_by_run)
            insert = self._insert(
                Artifact,
                {
                    "kind": kind,
                    "uri": uri,
                    "sha256": sha256,
                    "produced_by_run": produced_by_run,
                    "created_at": _now(),
                    "meta": details,
                },
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["kind", "sha256"]))
            row = session.execute(
                sa.select(Artifact).where(Artifact.kind == kind, Artifact.sha256 == sha256)
            ).scalar_one()
            if row.uri != uri and uri.rstrip("/").endswith(f"/objects/{kind}/{sha256}"):
                # The same content, now stored by its hash: the row follows it there.
                row.uri = uri
                session.flush()
            return _artifact_record(row)

    def get_artifact(self, artifact_id: int) -> ArtifactRecord | None:
        """The artifact with this id, or None."""
        with self._reading() as session:
            row = session.get(Artifact, artifact_id)
            return None if row is None else _artifact_record(row)

    def find_artifact(self, kind: str, sha256: str) -> ArtifactRecord | None:
        """The artifact of this kind with this content hash, or None."""
        with self._reading() as session:
            row = session.execute(
                sa.select(Artifact).where(Artifact.kind == kind, Artifact.sha256 == sha256)
            ).scalar_one_or_none()
            return None if row is None else _artifact_record(row)

    # gates

    def record_gate(
        self,
        run_id: str,
        gate: str,
        status: str,
        *,
        subject: str = "",
        checks: Sequence[Mapping[str, object]] | None = None,
        metrics: Mapping[str, object] | None = None,
        report_uri: str | None = None,
    ) -> GateRecord:
        """Record a gate's verdict; recording the same (run, gate, subject) again replaces it.

        The replaced row keeps its id (and so its place in :meth:`gate_results`)
        and takes the new status, checks, metrics, report and time.
        """
        _check_choice("gate status", status, GATE_STATUSES)
        if not gate:
            raise LedgerError("a gate result needs the gate's name")
        check_list = _check_json("checks", [dict(check) for check in checks or ()])
        metric_map = _check_json("metrics", dict(metrics or {}))
        with self._writing() as session:
            self._lock_chain(session)
            self._require_run(session, run_id)
            insert = self._insert(
                GateResult,
                {
                    "run_id": run_id,
                    "gate": gate,
                    "subject": subject,
                    "status": status,
                    "checks": check_list,
                    "metrics": metric_map,
                    "report_uri": report_uri,
                    "created_at": _now(),
                },
            )
            replaced = ("status", "checks", "metrics", "report_uri", "created_at")
            session.execute(
                insert.on_conflict_do_update(
                    index_elements=["run_id", "gate", "subject"],
                    set_={column: insert.excluded[column] for column in replaced},
                )
            )
            row = session.execute(
                sa.select(GateResult).where(
                    GateResult.run_id == run_id,
                    GateResult.gate == gate,
                    GateResult.subject == subject,
                )
            ).scalar_one()
            # A replaced verdict gets a new chain entry; the same verdict again does not.
            self._chain(session, "gate", row.id, gate_payload(_columns(row)))
            return _gate_record(row)

    def gate_results(self, run_id: str) -> list[GateRecord]:
        """Every gate verdict of the run, in the order the gates were first recorded."""
        query = sa.select(GateResult).where(GateResult.run_id == run_id).order_by(GateResult.id)
        with self._reading() as session:
            return [_gate_record(row) for row in session.scalars(query)]

    # ingestion

    def gates_on_subject(self, gate: str, subject: str) -> list[GateRecord]:
        """Every run's verdict of ``gate`` on ``subject`` (e.g. ``model:<sha>``), oldest first."""
        query = (
            sa.select(GateResult)
            .where(GateResult.gate == gate, GateResult.subject == subject)
            .order_by(GateResult.id)
        )
        with self._reading() as session:
            return [_gate_record(row) for row in session.scalars(query)]

    def find_ingested_file(self, table_name: str, sha256: str) -> IngestFileRecord | None:
        """The earlier load of this file content into this table, or None."""
        with self._reading() as session:
            row = session.execute(
                sa.select(IngestFile).where(
                    IngestFile.table_name == table_name, IngestFile.sha256 == sha256
                )
            ).scalar_one_or_none()
            return None if row is None else _ingest_record(row)

    def record_ingested_file(self, record: IngestFileRecord) -> IngestFileRecord:
        """Record a loaded file; the same content in the same table is recorded once.

        Returns the stored row: the earlier one when this content was already
        recorded (compare ``batch_id`` or ``id`` to tell). Refuses counts that
        lose rows (invariant 4: rows_read = rows_accepted + rows_quarantined).
        """
        _check_counts(record)
        reasons = _check_json("quarantine_by_reason", dict(record.quarantine_by_reason))
        extra = _check_json("extra_columns", list(record.extra_columns))
        if record.ingested_at is not None and record.ingested_at.tzinfo is None:
            raise LedgerError(f"{record.file_name}: ingested_at must be timezone-aware")
        ingested_at = _now() if record.ingested_at is None else _utc(record.ingested_at)
        with self._writing() as session:
            if record.run_id is not None:
                self._require_run(session, record.run_id)
            insert = self._insert(
                IngestFile,
                {
                    "run_id": record.run_id,
                    "batch_id": record.batch_id,
                    "file_name": record.file_name,
                    "table_name": record.table_name,
                    "sha256": record.sha256,
                    "bytes": record.bytes,
                    "rows_read": record.rows_read,
                    "rows_accepted": record.rows_accepted,
                    "rows_quarantined": record.rows_quarantined,
                    "quarantine_by_reason": reasons,
                    "extra_columns": extra,
                    "ingested_at": ingested_at,
                },
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["table_name", "sha256"]))
            row = session.execute(
                sa.select(IngestFile).where(
                    IngestFile.table_name == record.table_name,
                    IngestFile.sha256 == record.sha256,
                )
            ).scalar_one()
            return _ingest_record(row)

    def ingested_files(
        self, *, run_id: str | None = None, batch_id: str | None = None
    ) -> list[IngestFileRecord]:
        """Recorded files, optionally of one run and/or one batch, oldest first."""
        query = sa.select(IngestFile).order_by(IngestFile.id)
        if run_id is not None:
            query = query.where(IngestFile.run_id == run_id)
        if batch_id is not None:
            query = query.where(IngestFile.batch_id == batch_id)
        with self._reading() as session:
            return [_ingest_record(row) for row in session.scalars(query)]

    def forget_ingested_file(self, table_name: str, sha256: str) -> None:
        """Drop the load record of a purged file, so the same content can be loaded again."""
        with self._writing() as session:
            session.execute(
                sa.delete(IngestFile).where(
                    IngestFile.table_name == table_name, IngestFile.sha256 == sha256
                )
            )

    # retention

    def record_retention_purge(
        self, table_name: str, rows: int, cutoff: datetime, *, run_id: str | None = None
    ) -> RetentionPurgeRecord:
        """Record that ``rows`` rows of ``table_name`` older than ``cutoff`` were deleted."""
        if rows < 0:
            raise LedgerError(f"{table_name}: a purge of {rows} rows")
        if cutoff.tzinfo is None:
            raise LedgerError(f"{table_name}: the purge cutoff must be timezone-aware")
        with self._writing() as session:
            if run_id is not None:
                self._require_run(session, run_id)
            row = RetentionPurge(
                purged_at=_now(),
                table_name=table_name,
                rows=rows,
                cutoff=_utc(cutoff),
                run_id=run_id,
            )
            session.add(row)
            session.flush()
            return _retention_record(row)

    def retention_purges(self, *, run_id: str | None = None) -> list[RetentionPurgeRecord]:
        """Recorded purges, optionally of one run, oldest first."""
        query = sa.select(RetentionPurge).order_by(RetentionPurge.id)
        if run_id is not None:
            query = query.where(RetentionPurge.run_id == run_id)
        with self._reading() as session:
            return [_retention_record(row) for row in session.scalars(query)]

    # batches (write-audit-publish)

    def land_batch(
        self, batch_id: str, files: Sequence[Mapping[str, Any]], *, run_id: str | None = None
    ) -> BatchRecord:
        """Record that ``batch_id`` landed with ``files``; a batch landed again keeps its row.

        A new batch, or a blocked or purged one delivered again, becomes ``landed``; a
        batch already gated or published keeps its state (the same content is not judged
        twice within its life).
        """
        details = _check_json("files", [dict(f) for f in files])
        now = _now()
        with self._writing() as session:
            if run_id is not None:
                self._require_run(session, run_id)
            insert = self._insert(
                Batch,
                {
                    "batch_id": batch_id,
                    "state": "landed",
                    "run_id": run_id,
                    "files": details,
                    "landed_at": now,
                    "updated_at": now,
                },
            )
            created = cast(
                sa.CursorResult[Any],
                session.execute(insert.on_conflict_do_nothing(index_elements=["batch_id"])),
            )
            row = session.execute(
                sa.select(Batch).where(Batch.batch_id == batch_id).with_for_update()
            ).scalar_one()
            if created.rowcount:
                session.add(BatchEvent(batch_id=batch_id, state="landed", run_id=run_id, at=now))
            elif row.state in ("blocked", "purged"):
                self._move_batch(session, row, "landed", run_id=run_id, reason="delivered again")
                row.files = details
            session.flush()
            return _batch_record(row, self._batch_events(session, batch_id))

    def set_batch_state(
        self,
        batch_id: str,
        state: str,
        *,
        run_id: str | None = None,
        gate: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
        snapshot_id: str | None = None,
        at: datetime | None = None,
        attestation: Mapping[str, Any] | None = None,
    ) -> BatchRecord:
        """Move a batch to ``state`` and log the move; an impossible move is refused.

        ``gate`` names the gate that blocked it; ``actor`` the person who purged it,
        ``attestation`` their signed statement made at ``at`` (default: now).
        Setting the state it already has changes nothing and logs nothing.
        """
        _check_choice("batch state", state, BATCH_STATES)
        with self._writing() as session:
            row = session.execute(
                sa.select(Batch).where(Batch.batch_id == batch_id).with_for_update()
            ).scalar_one_or_none()
            if row is None:
                raise LedgerError(f"unknown batch {batch_id!r}: it was never landed")
            if row.state != state:
                self._move_batch(
                    session,
                    row,
                    state,
                    run_id=run_id,
                    gate=gate,
                    reason=reason,
                    actor=actor,
                    at=at,
                    attestation=attestation,
                )
                if snapshot_id is not None:
                    row.snapshot_id = snapshot_id
            session.flush()
            return _batch_record(row, self._batch_events(session, batch_id))

    def _move_batch(
        self,
        session: Session,
        row: Batch,
        state: str,
        *,
        run_id: str | None,
        gate: str | None = None,
        reason: str | None = None,
        actor: str | None = None,
        at: datetime | None = None,
        attestation: Mapping[str, Any] | None = None,
    ) -> None:
        if state not in _BATCH_MOVES[row.state]:
            raise LedgerError(
                f"batch {row.batch_id} is {row.state}: it cannot become {state}"
                + (" (only a blocked batch can be purged)" if state == "purged" else "")
            )
        now = _utc(at) if at is not None else _now()
        row.state = state
        row.run_id = run_id if run_id is not None else row.run_id
        row.gate = gate if state == "blocked" else None
        row.reason = reason
        row.updated_at = now
        session.add(
            BatchEvent(
                batch_id=row.batch_id,
                state=state,
                run_id=run_id,
                actor=actor,
                reason=reason,
                at=now,
                attestation=None if attestation is None else dict(attestation),
            )
        )

    def _batch_events(self, session: Session, batch_id: str) -> list[BatchEvent]:
        query = sa.select(BatchEvent).where(BatchEvent.batch_id == batch_id).order_by(BatchEvent.id)
        return list(session.scalars(query))

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        """The batch with its history, or None if it never landed."""
        with self._reading() as session:
            row = session.get(Batch, batch_id)
            return (
                None if row is None else _batch_record(row, self._batch_events(session, batch_id))
            )

    def batches(self, limit: int = 50, state: str | None = None) -> list[BatchRecord]:
        """The latest ``limit`` batches (in one state, if given), newest first."""
        if limit < 1:
            raise LedgerError(f"limit must be at least 1, got {limit}")
        query = sa.select(Batch).order_by(Batch.landed_at.desc(), Batch.batch_id).limit(limit)
        if state is not None:
            _check_choice("batch state", state, BATCH_STATES)
            query = query.where(Batch.state == state)
        with self._reading() as session:
            return [
                _batch_record(row, self._batch_events(session, row.batch_id))
                for row in session.scalars(query)
            ]

    # pinned policies and published snapshots

    def pin_policy(self, sha256: str, content: str, source: str) -> None:
        """Keep the bytes of a policy under their sha256 (idempotent)."""
        with self._writing() as session:
            insert = self._insert(
                PolicyVersion,
                {"sha256": sha256, "content": content, "source": source, "first_seen_at": _now()},
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["sha256"]))

    def policy_content(self, sha256: str) -> tuple[str, str] | None:
        """(content, source) of a pinned policy, or None if no run pinned it."""
        with self._reading() as session:
            row = session.get(PolicyVersion, sha256)
            return None if row is None else (row.content, row.source)

    def record_policy_approval(
        self,
        policy_sha256: str,
        approved_by: str,
        *,
        approved_at: datetime,
        via: str,
        previous_sha256: str | None,
        attestation: Mapping[str, Any],
        comment: str = "",
    ) -> PolicyApprovalRecord:
        """Put a pinned policy in force, recording who approved it and their signed statement.

        The policy must have been pinned (:meth:`pin_policy`) first; ``previous_sha256``
        must be the policy in force now (None when there is none), so two approvals
        decided from the same state cannot both land.
        """
        _check_choice("policy approval channel", via, POLICY_APPROVAL_CHANNELS)
        if not approved_by:
            raise LedgerError("a policy approval needs approved_by")
        with self._writing() as session:
            self._lock_chain(session)
            if session.get(PolicyVersion, policy_sha256) is None:
                raise LedgerError(f"policy {policy_sha256[:12]} is not pinned in the ledger")
            current = session.execute(
                sa.select(PolicyApproval.policy_sha256)
                .order_by(PolicyApproval.id.desc())
                .limit(1)
                .with_for_update()
            ).scalar_one_or_none()
            if current != previous_sha256:
                raise LedgerError(
                    f"the policy in force is {(current or 'none')[:12]}, not "
                    f"{(previous_sha256 or 'none')[:12]}: it changed since you read it"
                )
            row = PolicyApproval(
                policy_sha256=policy_sha256,
                approved_by=approved_by,
                approved_at=_utc(approved_at),
                via=via,
                previous_sha256=previous_sha256,
                comment=comment,
                attestation=dict(attestation),
            )
            session.add(row)
            session.flush()
            self._chain(session, "policy_approval", row.id, policy_approval_payload(_columns(row)))
            return _policy_approval_record(row)

    def policy_approvals(self, sha256: str | None = None) -> list[PolicyApprovalRecord]:
        """Every policy approval (of one policy, with ``sha256``), oldest first."""
        query = sa.select(PolicyApproval).order_by(PolicyApproval.id)
        if sha256 is not None:
            query = query.where(PolicyApproval.policy_sha256 == sha256)
        with self._reading() as session:
            return [_policy_approval_record(row) for row in session.scalars(query)]

    def policy_in_force(self) -> PolicyApprovalRecord | None:
        """The newest policy approval: its policy is the one in force (None: none yet)."""
        query = sa.select(PolicyApproval).order_by(PolicyApproval.id.desc()).limit(1)
        with self._reading() as session:
            row = session.scalars(query).one_or_none()
            return None if row is None else _policy_approval_record(row)

    def record_snapshot(
        self,
        snapshot_id: str,
        *,
        schema_name: str,
        fingerprint: str,
        run_id: str | None,
        batch_id: str | None,
        tables: Mapping[str, Any],
    ) -> SnapshotRecord:
        """Record a published snapshot (idempotent on its id)."""
        details = _check_json("tables", dict(tables))
        with self._writing() as session:
            if run_id is not None:
                self._require_run(session, run_id)
            insert = self._insert(
                Snapshot,
                {
                    "snapshot_id": snapshot_id,
                    "schema_name": schema_name,
                    "fingerprint": fingerprint,
                    "run_id": run_id,
                    "batch_id": batch_id,
                    "tables": details,
                    "published_at": _now(),
                },
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["snapshot_id"]))
            row = session.get(Snapshot, snapshot_id)
            assert row is not None
            return _snapshot_record(row)

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord | None:
        """A published snapshot, or None."""
        with self._reading() as session:
            row = session.get(Snapshot, snapshot_id)
            return None if row is None else _snapshot_record(row)

    def snapshots(self, limit: int = 20) -> list[SnapshotRecord]:
        """The latest ``limit`` published snapshots, newest first."""
        query = (
            sa.select(Snapshot)
            .order_by(Snapshot.published_at.desc(), Snapshot.snapshot_id.desc())
            .limit(limit)
        )
        with self._reading() as session:
            return [_snapshot_record(row) for row in session.scalars(query)]

    # approvals

    def record_approval(
        self,
        run_id: str,
        decision: str,
        decided_by: str,
        *,
        model_sha256: str,
        index_sha256: str,
        via: str,
        comment: str = "",
        policy_sha256: str | None = None,
        decided_at: datetime | None = None,
        attestation: Mapping[str, Any] | None = None,
    ) -> ApprovalRecord:
        """Record a decision on promoting this exact model + index pair.

        ``attestation`` is the author's signed statement of the decision, made at
        ``decided_at`` (default: now), for decisions made on the command line.

        Approvals are an append-only log so a changed mind stays visible; a
        retry that repeats the approver's latest decision on the same pair
        (same decision, same channel) returns that row instead of adding one.
        """
        _check_choice("decision", decision, DECISIONS)
        _check_choice("approval channel", via, APPROVAL_CHANNELS)
        if not decided_by:
            raise LedgerError("an approval needs decided_by")
        if not model_sha256 or not index_sha256:
            raise LedgerError("an approval needs both model_sha256 and index_sha256")
        with self._writing() as session:
            self._lock_chain(session)
            # Locking the run serialises approvals of that run, so two retries
            # racing each other cannot both decide that no row exists yet.
            self._require_run(session, run_id, lock=True)
            latest = session.execute(
                sa.select(Approval)
                .where(
                    Approval.run_id == run_id,
                    Approval.model_sha256 == model_sha256,
                    Approval.index_sha256 == index_sha256,
                    Approval.decided_by == decided_by,
                )
                .order_by(Approval.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is not None and (latest.decision, latest.via) == (decision, via):
                return _approval_record(latest)
            row = Approval(
                run_id=run_id,
                model_sha256=model_sha256,
                index_sha256=index_sha256,
                decision=decision,
                decided_by=decided_by,
                decided_at=_utc(decided_at) if decided_at is not None else _now(),
                comment=comment,
                via=via,
                policy_sha256=policy_sha256,
                attestation=None if attestation is None else dict(attestation),
            )
            session.add(row)
            session.flush()
            self._chain(session, "approval", row.id, approval_payload(_columns(row)))
            return _approval_record(row)

    def approvals(self, run_id: str) -> list[ApprovalRecord]:
        """Every decision recorded for the run, oldest first."""
        query = sa.select(Approval).where(Approval.run_id == run_id).order_by(Approval.id)
        with self._reading() as session:
            return [_approval_record(row) for row in session.scalars(query)]

    def approvals_of_pair(self, model_sha256: str, index_sha256: str) -> list[ApprovalRecord]:
        """Every decision on this exact model + index pair, in any run, oldest first."""
        query = (
            sa.select(Approval)
            .where(Approval.model_sha256 == model_sha256, Approval.index_sha256 == index_sha256)
            .order_by(Approval.id)
        )
        with self._reading() as session:
            return [_approval_record(row) for row in session.scalars(query)]

    # aliases

    def get_alias(self, name: str = "champion") -> AliasRecord | None:
        """Where the alias points now, or None if it was never moved."""
        with self._reading() as session:
            alias = session.get(Alias, name)
            return None if alias is None else self._alias_record(session, alias)

    def move_alias(
        self,
        name: str,
        model_artifact_id: int,
        index_artifact_id: int,
        *,
        moved_by: str,
        reason: str,
        action: str = "promote",
        run_id: str | None = None,
        expected_version: int | None = None,
        moved_at: datetime | None = None,
        attestation: Mapping[str, Any] | None = None,
    ) -> AliasRecord:
        """Point the alias at a model and its index, together, in one transaction.

        ``attestation`` is the author's signed statement of the move, made at
        ``moved_at`` (default: now), for a rollback made on the command line.

        The alias row and its history row are written together or not at all
        (invariant 3). ``expected_version`` is the version the caller decided
        from (0 for an alias that does not exist yet); if the alias has moved
        since, this raises :class:`LedgerError` and changes nothing. Moving to
        the pair the alias already points at is a no-op that returns the
        current alias, so a retried promotion never adds a version.
        """
        _check_choice("alias action", action, ALIAS_ACTIONS)
        if not moved_by or not reason:
            raise LedgerError("an alias move needs moved_by and a reason")
        try:
            with self._writing() as session:
                self._lock_chain(session)
                model = self._require_artifact(session, model_artifact_id, "model")
                index = self._require_artifact(session, index_artifact_id, "index")
                if run_id is not None:
                    self._require_run(session, run_id)
                alias = session.execute(
                    sa.select(Alias).where(Alias.name == name).with_for_update()
                ).scalar_one_or_none()
                already_there = (
                    alias is not None
                    and alias.model_artifact_id == model_artifact_id
                    and alias.index_artifact_id == index_artifact_id
                )
                if alias is not None and already_there:
                    return self._alias_record(session, alias)
                current_version = 0 if alias is None else alias.version
                if expected_version is not None and expected_version != current_version:
                    raise LedgerError(
                        f"alias {name!r} is at version {current_version}, not "
                        f"{expected_version}: it moved since you read it"
                    )
                previous_model = None if alias is None else alias.model_artifact_id
                previous_index = None if alias is None else alias.index_artifact_id
                now = _utc(moved_at) if moved_at is not None else _now()
                if alias is None:
                    alias = Alias(name=name)
                    session.add(alias)
                alias.model_artifact_id = model_artifact_id
                alias.index_artifact_id = index_artifact_id
                alias.run_id = run_id
                alias.updated_at = now
                alias.updated_by = moved_by
                # Flushed first so the version bump (or the insert) happens
                # before the history row that records it.
                session.flush()
                move = AliasHistory(
                    alias=name,
                    version=alias.version,
                    action=action,
                    model_artifact_id=model_artifact_id,
                    index_artifact_id=index_artifact_id,
                    previous_model_artifact_id=previous_model,
                    previous_index_artifact_id=previous_index,
                    run_id=run_id,
                    moved_by=moved_by,
                    moved_at=now,
                    reason=reason,
                    attestation=None if attestation is None else dict(attestation),
                )
                session.add(move)
                session.flush()
                payload = alias_move_payload(_columns(move), model.sha256, index.sha256)
                self._chain(session, "alias_move", move.id, payload)
                return self._alias_record(session, alias)
        except (IntegrityError, StaleDataError) as exc:
            # Another process moved or created the alias between our read and
            # our write; the transaction rolled back, so nothing of this move was kept.
            raise LedgerError(
                f"alias {name!r} was not moved (it changed concurrently): {exc}"
            ) from exc

    def alias_history(self, name: str = "champion") -> list[AliasMove]:
        """Every move of the alias, oldest first."""
        query = (
            sa.select(AliasHistory)
            .where(AliasHistory.alias == name)
            .order_by(AliasHistory.version, AliasHistory.id)
        )
        with self._reading() as session:
            return [_alias_move(row) for row in session.scalars(query)]

    # tamper evidence

    def _lock_chain(self, session: Session) -> None:
        # First statement of a chained write, before any row lock, so that two
        # writers never wait for each other's locks in opposite orders.
        if self._dialect == "postgresql":
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CHAIN_LOCK})

    def _chain(self, session: Session, kind: str, ref_id: int, payload: Mapping[str, Any]) -> None:
        """Append a chain entry for the row, unless its latest entry already has this payload."""
        digest = payload_sha256(payload)
        latest = session.execute(
            sa.select(ChainEntry.payload_sha256)
            .where(ChainEntry.kind == kind, ChainEntry.ref_id == ref_id)
            .order_by(ChainEntry.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if latest == digest:
            return
        head = session.execute(
            sa.select(ChainEntry.row_hash).order_by(ChainEntry.id.desc()).limit(1)
        ).scalar_one_or_none()
        prev = head or GENESIS
        session.add(
            ChainEntry(
                kind=kind,
                ref_id=ref_id,
                payload_sha256=digest,
                prev_hash=prev,
                row_hash=entry_hash(prev, kind, ref_id, digest),
                recorded_at=_now(),
            )
        )
        session.flush()

    def verify(self) -> VerifyReport:
        """Recompute the hash chain and check the decision record against it.

        Checks, in this order: every chain entry links to the one before it and
        its ``row_hash`` matches its content; every gate verdict, approval and
        alias move has a chain entry (a row inserted outside the ledger has none)
        and its current content hashes to its latest entry; every chained row
        still exists; and each alias points where its latest recorded move put it.
        Reads one consistent snapshot; changes nothing.
        """
        problems: list[ChainProblem] = []
        with self._reading() as session:
            if self._dialect == "postgresql":
                # One snapshot for every query, so a concurrent write is not mistaken
                # for a row without its chain entry.
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            entries = list(session.scalars(sa.select(ChainEntry).order_by(ChainEntry.id)))
            latest = self._check_links(entries, problems)
            shas: dict[int, str] = {
                artifact_id: sha
                for artifact_id, sha in session.execute(sa.select(Artifact.id, Artifact.sha256))
            }
            seen: set[tuple[str, int]] = set()

            def check(kind: str, row_id: int, payload: Mapping[str, Any]) -> None:
                seen.add((kind, row_id))
                table = CHAIN_TABLES[kind]
                entry = latest.get((kind, row_id))
                if entry is None:
                    problems.append(
                        ChainProblem(
                            table, str(row_id), "has no chain entry: written outside the ledger"
                        )
                    )
                elif entry.payload_sha256 != payload_sha256(payload):
                    problems.append(
                        ChainProblem(
                            table,
                            str(row_id),
                            f"differs from what chain entry {entry.id} recorded: "
                            "edited outside the ledger",
                        )
                    )

            for gate in session.scalars(sa.select(GateResult).order_by(GateResult.id)):
                check("gate", gate.id, gate_payload(_columns(gate)))
            for approval in session.scalars(sa.select(Approval).order_by(Approval.id)):
                check("approval", approval.id, approval_payload(_columns(approval)))
            for move in session.scalars(sa.select(AliasHistory).order_by(AliasHistory.id)):
                payload = alias_move_payload(
                    _columns(move),
                    shas.get(move.model_artifact_id),
                    shas.get(move.index_artifact_id),
                )
                check("alias_move", move.id, payload)
            for approved in session.scalars(sa.select(PolicyApproval).order_by(PolicyApproval.id)):
                check("policy_approval", approved.id, policy_approval_payload(_columns(approved)))
            for (kind, ref_id), entry in sorted(latest.items(), key=lambda item: item[1].id):
                if (kind, ref_id) not in seen:
                    problems.append(
                        ChainProblem(
                            CHAIN_TABLES[kind],
                            str(ref_id),
                            f"is missing but chain entry {entry.id} recorded it: deleted",
                        )
                    )
            problems.extend(self._check_aliases(session))
            problems.extend(_SignatureCheck(session, shas).problems())
        return VerifyReport(
            entries=len(entries), head=entries[-1].row_hash if entries else None, problems=problems
        )

    @staticmethod
    def _check_links(
        entries: Sequence[ChainEntry], problems: list[ChainProblem]
    ) -> dict[tuple[str, int], ChainEntry]:
        """Check each entry's linkage and hash; return the latest entry of each chained row."""
        latest: dict[tuple[str, int], ChainEntry] = {}
        prev = GENESIS
        for entry in entries:
            if entry.kind not in CHAIN_TABLES:
                problems.append(
                    ChainProblem("chain", str(entry.id), f"unknown kind {entry.kind!r}")
                )
            elif entry.prev_hash != prev:
                problems.append(
                    ChainProblem(
                        "chain",
                        str(entry.id),
                        "does not follow the entry before it: an entry was deleted, "
                        "inserted or edited",
                    )
                )
            elif entry.row_hash != entry_hash(
                entry.prev_hash, entry.kind, entry.ref_id, entry.payload_sha256
            ):
                problems.append(
                    ChainProblem("chain", str(entry.id), "its row_hash does not match its content")
                )
            prev = entry.row_hash
            latest[(entry.kind, entry.ref_id)] = entry
        return latest

    @staticmethod
    def _check_aliases(session: Session) -> list[ChainProblem]:
        """Each alias must point where its latest recorded move put it."""
        problems = []
        for alias in session.scalars(sa.select(Alias).order_by(Alias.name)):
            move = session.execute(
                sa.select(AliasHistory)
                .where(AliasHistory.alias == alias.name)
                .order_by(AliasHistory.version.desc(), AliasHistory.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if move is None:
                problems.append(
                    ChainProblem("aliases", alias.name, "has no recorded move in alias_history")
                )
                continue
            now = (alias.version, alias.model_artifact_id, alias.index_artifact_id)
            recorded = (move.version, move.model_artifact_id, move.index_artifact_id)
            if now != recorded:
                problems.append(
                    ChainProblem(
                        "aliases",
                        alias.name,
                        f"points at v{now[0]} model {now[1]} + index {now[2]}, but its latest "
                        f"recorded move (alias_history {move.id}) is v{recorded[0]} model "
                        f"{recorded[1]} + index {recorded[2]}",
                    )
                )
        return problems

    def require_intact(self) -> VerifyReport:
        """:meth:`verify`, raising :class:`LedgerTampered` (naming the first bad row) if it fails."""
        report = self.verify()
        if not report.ok:
            raise LedgerTampered(report)
        return report

    def verify_champion(self, name: str = "champion") -> AliasRecord | None:
        """Where the alias points, only once the whole ledger verified (else LedgerTampered).

        Callers that act on the champion (search, promotion, rollback, status)
        use this instead of :meth:`get_alias`.
        """
        self.require_intact()
        return self.get_alias(name)

    def _require_artifact(self, session: Session, artifact_id: int, kind: str) -> Artifact:
        row = session.get(Artifact, artifact_id)
        if row is None:
            raise LedgerError(f"artifact {artifact_id} does not exist")
        if row.kind != kind:
            raise LedgerError(f"artifact {artifact_id} is a {row.kind!r}, not a {kind!r}")
        return row

    def _alias_record(self, session: Session, alias: Alias) -> AliasRecord:
        model = session.get(Artifact, alias.model_artifact_id)
        index = session.get(Artifact, alias.index_artifact_id)
        if model is None or index is None:
            raise LedgerError(f"alias {alias.name!r} points at a missing artifact")
        return AliasRecord(
            name=alias.name,
            version=alias.version,
            model=_artifact_record(model),
            index=_artifact_record(index),
            run_id=alias.run_id,
            updated_at=_utc(alias.updated_at),
            updated_by=alias.updated_by,
        )


def open_ledger(url: str) -> Ledger:
    """A ledger at ``url`` with its schema migrated to head (cheap when already current)."""
    ledger = Ledger(url)
    ledger.migrate()
    return ledger


class _SignatureCheck:
    """Every signed decision's envelope verifies, states what its row records, and was
    signed with the key the relevant policy lists for its author."""

    def __init__(self, session: Session, shas: Mapping[int, str]) -> None:
        self.session = session
        self.shas = shas
        self._keys: dict[str, dict[str, str] | None] = {}
        self._development: dict[str, bool] = {}

    def _policy(self, sha256: str | None) -> tuple[dict[str, str] | None, bool]:
        """(approver keys, is a development policy) of a pinned policy; (None, False) if absent."""
        if not sha256:
            return None, False
        if sha256 not in self._keys:
            from shelfguard.policy import PolicyError, parse_policy

            row = self.session.get(PolicyVersion, sha256)
            try:
                policy = None if row is None else parse_policy(row.content.encode(), row.source)
            except PolicyError:
                policy = None
            self._keys[sha256] = None if policy is None else dict(policy.approval.keys)
            self._development[sha256] = policy is not None and policy.approval.development
        return self._keys[sha256], self._development[sha256]

    def _check(
        self,
        table: str,
        row_id: object,
        envelope: Mapping[str, Any] | None,
        expected: Mapping[str, Any],
        *,
        any_key: bool = False,
    ) -> ChainProblem | None:
        keys, _ = self._policy(expected.get("policy_sha256"))
        key = (keys or {}).get(str(expected.get("by")))
        if any_key and envelope:
            key = str((envelope.get("signatures") or [{}])[0].get("keyid"))
        elif keys is None and envelope:
            sha = str(expected.get("policy_sha256") or "none")[:12]
            return ChainProblem(
                table, str(row_id), f"signed under policy {sha}, which the ledger does not hold"
            )
        problem = signing.check_envelope(envelope, expected, key)
        return None if problem is None else ChainProblem(table, str(row_id), problem)

    def _claimed_policy(self, envelope: Mapping[str, Any] | None) -> str | None:
        try:
            return str(signing.open_envelope(envelope).statement.get("policy_sha256") or "")
        except signing.SigningError:
            return None

    def problems(self) -> list[ChainProblem]:
        """Every signed row that does not verify (unsigned rows are judged elsewhere)."""
        found: list[ChainProblem | None] = []
        for a in self.session.scalars(
            sa.select(Approval).where(Approval.attestation.is_not(None)).order_by(Approval.id)
        ):
            expected = signing.approval_statement(a)
            found.append(self._check("approvals", a.id, a.attestation, expected))
        for m in self.session.scalars(
            sa.select(AliasHistory)
            .where(AliasHistory.attestation.is_not(None))
            .order_by(AliasHistory.id)
        ):
            expected = signing.rollback_statement(
                m.moved_by,
                m.moved_at,
                alias=m.alias,
                version=m.version,
                model_sha256=self.shas.get(m.model_artifact_id, ""),
                index_sha256=self.shas.get(m.index_artifact_id, ""),
                policy_sha256=self._claimed_policy(m.attestation) or "",
            )
            found.append(self._check("alias_history", m.id, m.attestation, expected))
        for e in self.session.scalars(
            sa.select(BatchEvent).where(BatchEvent.attestation.is_not(None)).order_by(BatchEvent.id)
        ):
            expected = signing.purge_statement(
                e.actor or "",
                e.at,
                batch_id=e.batch_id,
                policy_sha256=self._claimed_policy(e.attestation) or "",
            )
            found.append(self._check("batch_events", e.id, e.attestation, expected))
        for p in self.session.scalars(sa.select(PolicyApproval).order_by(PolicyApproval.id)):
            found.append(self._policy_problem(p))
        return [problem for problem in found if problem is not None]

    def _policy_problem(self, row: PolicyApproval) -> ChainProblem | None:
        authority = self._claimed_policy(row.attestation) or ""
        expected = signing.policy_statement(
            row.approved_by,
            row.approved_at,
            policy_sha256=authority,
            approves_sha256=row.policy_sha256,
            previous_sha256=row.previous_sha256,
        )
        if row.via == "setup":
            _, development = self._policy(row.policy_sha256)
            if not development:
                return ChainProblem(
                    "policy_approvals",
                    str(row.id),
                    "approved by the embedded setup, but it is not a development policy",
                )
            return self._check("policy_approvals", row.id, row.attestation, expected, any_key=True)
        return self._check("policy_approvals", row.id, row.attestation, expected)
