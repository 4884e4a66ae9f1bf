"""Retention of quarantined personal data: expired quarantine lines deleted and logged."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shelfguard.data import duckdb_wait
from shelfguard.data.ingest.postgres_load import locked_transaction
from shelfguard.data.ingest.warehouse import _warehouse_kind
from shelfguard.data.wands import SPECS
from shelfguard.failpoints import failpoint
from shelfguard.ledger import Ledger, RetentionPurgeRecord

#: The warehouse's own record of each retention purge, written in the purge's transaction.
RETENTION_LOG = "governance.retention_purges"
_RETENTION_LOG_DDL = (
    "CREATE SCHEMA IF NOT EXISTS governance",
    f"CREATE TABLE IF NOT EXISTS {RETENTION_LOG} (table_name VARCHAR NOT NULL, "
    "rows BIGINT NOT NULL, cutoff TIMESTAMP WITH TIME ZONE NOT NULL, run_id VARCHAR, "
    "purged_at TIMESTAMP WITH TIME ZONE NOT NULL)",
)
_RETENTION_LOG_SELECT = f"SELECT table_name, rows, cutoff, run_id FROM {RETENTION_LOG}"
_PurgeLog = list[tuple[str, int, datetime, str | None]]


def _purge_duckdb(
    path: Path, tables: Sequence[str], cutoff: datetime, run_id: str | None
) -> _PurgeLog:
    if not path.exists():
        return []
    con = duckdb_wait.connect(path)
    try:
        present = {
            str(name)
            for (name,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'quarantine'"
            ).fetchall()
        }
        con.execute("BEGIN TRANSACTION")
        for statement in _RETENTION_LOG_DDL:
            con.execute(statement)
        for table in (t for t in tables if t in present):
            (deleted,) = con.execute(
                f"DELETE FROM quarantine.{table} WHERE quarantined_at < ?", [cutoff]
            ).fetchone() or (0,)
            if deleted:
                con.execute(
                    f"INSERT INTO {RETENTION_LOG} VALUES (?, ?, ?, ?, now())",
                    [f"quarantine.{table}", int(deleted), cutoff, run_id],
                )
        con.execute("COMMIT")
        log = con.execute(_RETENTION_LOG_SELECT).fetchall()
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return [(str(t), int(n), c, r) for t, n, c, r in log]


def _purge_postgres(
    url: str, tables: Sequence[str], cutoff: datetime, run_id: str | None
) -> _PurgeLog:
    with locked_transaction(url) as cur:
        for statement in _RETENTION_LOG_DDL:
            cur.execute(statement)
        for table in tables:
            cur.execute("SELECT to_regclass(%s)", [f"quarantine.{table}"])
            if (cur.fetchone() or (None,))[0] is None:
                continue
            cur.execute(f"DELETE FROM quarantine.{table} WHERE quarantined_at < %s", [cutoff])
            if cur.rowcount:
                cur.execute(
                    f"INSERT INTO {RETENTION_LOG} VALUES (%s, %s, %s, %s, now())",
                    [f"quarantine.{table}", int(cur.rowcount), cutoff, run_id],
                )
        cur.execute(_RETENTION_LOG_SELECT)
        log = cur.fetchall()
    return [(str(t), int(n), c, r) for t, n, c, r in log]


def _purge_key(table: str, cutoff: datetime) -> tuple[str, str]:
    return table, cutoff.astimezone(UTC).isoformat(timespec="milliseconds")


def purge_expired_quarantine(
    warehouse: Path | str,
    ledger: Ledger,
    retention_days: int,
    *,
    run_id: str | None = None,
    now: datetime | None = None,
) -> list[RetentionPurgeRecord]:
    """Delete quarantined lines holding personal fields once ``retention_days`` old.

    Quarantine keeps a rejected line's original bytes (invariant 4), and a search-log
    line's bytes hold a user id and an e-mail address in clear: they are kept for the
    policy's ``privacy.raw_retention_days``, then deleted. Each table's purge that deleted
    rows is logged in the warehouse (``governance.retention_purges``, in the transaction
    that deleted them) and then recorded in the ledger; a purge a crash kept from the
    ledger is recorded by the next one. A purge that finds nothing records nothing, so
    running it again changes nothing.
    """
    if retention_days < 1:
        raise ValueError(f"retention_days must be at least 1, not {retention_days}")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    kind, target = _warehouse_kind(warehouse)
    tables = [spec.table for spec in SPECS if spec.personal]
    if kind == "postgresql":
        log = _purge_postgres(str(target), tables, cutoff, run_id)
    else:
        log = _purge_duckdb(Path(target), tables, cutoff, run_id)
    failpoint("retention.warehouse_committed")
    # The warehouse logged each purge in its own transaction; the ledger records every
    # logged purge it does not hold yet: this one, and one a crash kept from it before.
    known = {_purge_key(p.table_name, p.cutoff) for p in ledger.retention_purges()}
    runs = {run_id} if run_id else set()
    recorded = []
    for table, rows, logged_cutoff, logged_run in log:
        if _purge_key(table, logged_cutoff) in known:
            continue
        if logged_run and logged_run not in runs:
            logged_run = logged_run if ledger.get_run(logged_run) else None
        recorded.append(
            ledger.record_retention_purge(table, rows, logged_cutoff, run_id=logged_run)
        )
        known.add(_purge_key(table, logged_cutoff))
    return recorded
