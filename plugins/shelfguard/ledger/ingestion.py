"""The ledger's side of ingestion: loaded files, batches, published snapshots, retention purges.

Batches follow write-audit-publish: landed, then gated, then published or blocked
(and a blocked batch purged); each move is logged as a batch event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shelfguard.ledger.base import LedgerBase, _check_choice, _check_json
from shelfguard.ledger.models import (
    BATCH_STATES,
    Batch,
    BatchEvent,
    IngestFile,
    RetentionPurge,
    Snapshot,
)
from shelfguard.ledger.records import (
    BatchRecord,
    IngestFileRecord,
    LedgerError,
    RetentionPurgeRecord,
    SnapshotRecord,
    _batch_record,
    _ingest_record,
    _now,
    _retention_record,
    _snapshot_record,
    _utc,
)

# Which state may follow which: a blocked or purged batch delivered again is landed anew
# and judged again; a published batch stays published when the same content lands again.
_BATCH_MOVES = {
    "landed": {"gated", "blocked", "landed"},
    "gated": {"published", "blocked", "landed", "gated"},
    "published": {"published"},
    "blocked": {"purged", "landed", "gated", "blocked"},
    "purged": {"landed", "purged"},
}


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


class IngestionMixin(LedgerBase):
    """Loaded files, retention purges, batches and their states, and published snapshots."""

    # ingested files

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
        return self._all(query, _ingest_record)

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
        return self._all(query, _retention_record)

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

    # published snapshots

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
        return self._all(query, _snapshot_record)
