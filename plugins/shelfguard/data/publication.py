"""Write-audit-publish in the warehouse: what dbt may read, and which marts are published.

Invariant 9: data that failed a gate is never read downstream. Three small tables in
the warehouse's ``governance`` schema carry it, maintained by the orchestrator only:

- ``governance.batch_files`` (batch_id, table_name, file_sha256): which file contents
  each landed batch brought, written when the batch lands;
- ``governance.published_batches`` (batch_id, snapshot_id, published_at): the batches
  whose data reached a published snapshot;
- ``governance.snapshots`` (snapshot_id, schema_name, fingerprint, run_id,
  published_at): every published snapshot of the marts.

Staging reads only files of published batches, plus the files of the one batch a run
is building (the dbt var ``candidate_batch``), see ``dbt_project/macros/publication.sql``.
dbt builds the marts of a run into the run's own schema (:func:`snapshot_schema`, the
dbt var ``marts_schema``); the training-data gate judges that candidate; then
:func:`publish` makes it the published marts in ONE warehouse transaction: the snapshot
and its batch are recorded and every view of the ``marts`` schema is pointed at the
candidate's tables. Nothing writes to a published snapshot schema again (dbt refuses
to, see the ``on-run-start`` guard), so a retraining run that pinned one reads the same
rows from start to end, whatever is published meanwhile. A run blocked at any gate
leaves ``marts`` exactly as it was; its candidate schema is dropped.

The same SQL runs on DuckDB (the embedded file) and PostgreSQL: DDL is transactional
on both, and the ``marts`` views are replaced inside the publishing transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from shelfguard.config import Settings
from shelfguard.data import duckdb_wait
from shelfguard.failpoints import failpoint
from shelfguard.ledger import BatchRecord, Ledger, SnapshotRecord
from shelfguard.policy import Policy
from shelfguard.signing import Signer, purge_statement, signing_time

GOVERNANCE = "governance"
MARTS = "marts"
SNAPSHOT_PREFIX = "snapshot_"
#: Published snapshots kept besides the current one and any a running run pinned.
SNAPSHOTS_KEPT = 3
_SCHEMA = re.compile(r"^snapshot_[0-9a-f]{16}$")
_BATCH = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_DDL = (
    f"CREATE SCHEMA IF NOT EXISTS {GOVERNANCE}",
    f"CREATE TABLE IF NOT EXISTS {GOVERNANCE}.batch_files ("
    "batch_id VARCHAR NOT NULL, table_name VARCHAR NOT NULL, file_sha256 VARCHAR NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {GOVERNANCE}.published_batches ("
    "batch_id VARCHAR NOT NULL, snapshot_id VARCHAR NOT NULL, "
    "published_at TIMESTAMP WITH TIME ZONE NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {GOVERNANCE}.snapshots ("
    "snapshot_id VARCHAR NOT NULL, schema_name VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, "
    "run_id VARCHAR, batch_id VARCHAR, published_at TIMESTAMP WITH TIME ZONE NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {GOVERNANCE}.purged_batches ("
    "batch_id VARCHAR NOT NULL, files VARCHAR NOT NULL, "
    "purged_at TIMESTAMP WITH TIME ZONE NOT NULL)",
)


class PublicationError(RuntimeError):
    """A publication was refused (the candidate changed, the schema is not a candidate...)."""


@dataclass(frozen=True)
class PublishedSnapshot:
    """A published snapshot of the marts, as the warehouse records it."""

    snapshot_id: str
    schema_name: str
    fingerprint: str
    run_id: str | None
    batch_id: str | None


def snapshot_schema(run_id: str) -> str:
    """The schema a run's candidate marts are built in (and published from): one per run."""
    return SNAPSHOT_PREFIX + hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16]


def builds_candidate(lineage: Mapping[str, Any]) -> bool:
    """Whether a run builds candidate marts (it lands a batch and publishes only when its
    data gates pass), as opposed to reading a published snapshot it pinned at its start.

    Read from the run's own lineage (its candidate ``marts_schema``, and no pinned
    ``snapshot_id``), not from the name of its DAG: a DAG with ``start_run(...,
    publishes=True)`` is a refresh DAG whatever it is called.
    """
    return bool(lineage.get("marts_schema")) and lineage.get("snapshot_id") is None


def snapshot_id_for(schema: str) -> str:
    """A snapshot is named by its schema: ``snapshot_<16 hex>`` -> ``snap-<16 hex>``."""
    _check_schema(schema)
    return "snap-" + schema.removeprefix(SNAPSHOT_PREFIX)


def _check_schema(schema: str) -> None:
    if not _SCHEMA.match(schema):
        raise PublicationError(f"{schema!r} is not a snapshot schema (snapshot_<16 hex>)")


def check_batch_id(batch_id: str) -> str:
    """A batch id safe to hand to dbt as a variable (letters, digits and ``._:-``)."""
    if not _BATCH.match(batch_id):
        raise PublicationError(f"not a batch id: {batch_id[:80]!r}")
    return batch_id


class _Warehouse:
    """One write connection, DuckDB or PostgreSQL, with ``?`` placeholders on both."""

    def __init__(self, settings: Settings) -> None:
        self.kind = settings.warehouse_kind
        if self.kind == "duckdb":
            settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
            self._con: Any = duckdb_wait.connect(settings.duckdb_path)
            self._cur: Any = self._con
        else:
            from shelfguard.data.ingest import pg_connect

            self._con = pg_connect(settings.warehouse_url)
            self._cur = self._con.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        if self.kind == "duckdb":
            self._cur.execute(sql, list(params))
        else:
            self._cur.execute(sql.replace("?", "%s"), list(params))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, params)
        return [tuple(row) for row in self._cur.fetchall()]

    def begin(self) -> None:
        if self.kind == "duckdb":
            self._con.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self._con.commit() if self.kind == "postgresql" else self._con.execute("COMMIT")

    def rollback(self) -> None:
        self._con.rollback() if self.kind == "postgresql" else self._con.execute("ROLLBACK")

    def close(self) -> None:
        self._con.close()


@contextmanager
def _transaction(settings: Settings) -> Iterator[_Warehouse]:
    """One write transaction on the warehouse, with the governance tables in place."""
    warehouse = _Warehouse(settings)
    try:
        warehouse.begin()
        try:
            for statement in _DDL:
                warehouse.execute(statement)
            yield warehouse
            warehouse.commit()
        except BaseException:
            warehouse.rollback()
            raise
    finally:
        warehouse.close()


def register_batch(settings: Settings, batch_id: str, files: Iterable[tuple[str, str]]) -> None:
    """Record which file contents (raw table, sha256) a landed batch brought (idempotent)."""
    check_batch_id(batch_id)
    with _transaction(settings) as warehouse:
        warehouse.execute(f"DELETE FROM {GOVERNANCE}.batch_files WHERE batch_id = ?", [batch_id])
        for table, sha256 in sorted(set(files)):
            warehouse.execute(
                f"INSERT INTO {GOVERNANCE}.batch_files VALUES (?, ?, ?)",
                [batch_id, table.removeprefix("raw."), sha256],
            )


def dbt_vars(batch_id: str | None, schema: str | None) -> dict[str, str]:
    """The dbt variables of a candidate build: which batch it may read, where marts go."""
    found: dict[str, str] = {}
    if batch_id:
        found["candidate_batch"] = check_batch_id(batch_id)
    if schema:
        _check_schema(schema)
        found["marts_schema"] = schema
    return found


def _tables(warehouse: _Warehouse, schema: str) -> list[str]:
    rows = warehouse.rows(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
        "AND table_type IN ('BASE TABLE') ORDER BY table_name",
        [schema],
    )
    return [str(row[0]) for row in rows]


def _published(warehouse: _Warehouse, where: str, params: Sequence[Any]) -> list[PublishedSnapshot]:
    rows = warehouse.rows(
        "SELECT snapshot_id, schema_name, fingerprint, run_id, batch_id "
        f"FROM {GOVERNANCE}.snapshots WHERE {where} ORDER BY published_at DESC, snapshot_id DESC",
        params,
    )
    return [PublishedSnapshot(*(str(v) if v is not None else None for v in row)) for row in rows]  # type: ignore[arg-type]


def fingerprint_tables(
    connection: Any, schema: str, tables: Iterable[str]
) -> tuple[str, dict[str, Any]]:
    """A content hash of ``schema``'s tables, computed by the warehouse (row order ignored).

    ``connection`` is a SQLAlchemy connection. Each row's text is hashed with md5, the
    hashes sorted and hashed again, so the same rows in any order give the same value.
    A missing table enters the hash as missing.
    """
    import sqlalchemy as sa

    digest = hashlib.sha256()
    per_table: dict[str, Any] = {}
    present = {
        str(row[0])
        for row in connection.execute(
            sa.text("select table_name from information_schema.tables where table_schema = :s"),
            {"s": schema},
        )
    }
    for table in tables:
        qualified = f"{schema}.{table}"
        if table not in present:
            digest.update(f"marts.{table}\0missing\n".encode())
            per_table[f"marts.{table}"] = None
            continue
        row = connection.execute(
            sa.text(
                "select count(*), md5(coalesce(string_agg(row_md5, '' order by row_md5), '')) "
                f"from (select md5(cast(t as varchar)) as row_md5 from {qualified} as t) as hashed"
            )
        ).one()
        rows, content = int(row[0]), str(row[1])
        # Keyed by the logical name, so a snapshot's fingerprint does not depend on its schema.
        digest.update(f"marts.{table}\0{rows}\0{content}\n".encode())
        per_table[f"marts.{table}"] = {"rows": rows, "md5": content}
    return digest.hexdigest()[:16], per_table


def current_snapshot(settings: Settings) -> PublishedSnapshot | None:
    """The snapshot the ``marts`` views point at now, or None before the first publication."""
    if settings.warehouse_kind == "duckdb" and not settings.duckdb_path.is_file():
        return None
    with _transaction(settings) as warehouse:
        found = _published(warehouse, "true", [])
    return found[0] if found else None


def publish(
    settings: Settings,
    *,
    schema: str,
    fingerprint: str,
    tables: Sequence[str],
    run_id: str,
    batch_id: str | None,
) -> PublishedSnapshot:
    """Make the candidate in ``schema`` the published marts, in one transaction.

    Re-computes the candidate's fingerprint first and refuses when it is not the one the
    training-data gate passed (``fingerprint``): what is published is exactly what was
    judged. Then records the snapshot and its batch, and points every ``marts.<table>``
    view at ``schema.<table>`` (a ``marts`` table left by an older release or a hand-run
    dbt build is replaced). Publishing the same schema again is a no-op.
    """
    from shelfguard.quality import open_warehouse

    _check_schema(schema)
    snapshot_id = snapshot_id_for(schema)
    with _transaction(settings) as warehouse:
        done = _published(warehouse, "schema_name = ?", [schema])
        if done:
            return done[0]
        present = _tables(warehouse, schema)
    missing = sorted(set(tables) - set(present))
    if missing:
        raise PublicationError(f"candidate {schema} lacks table(s) {', '.join(missing)}")
    with open_warehouse(settings.warehouse_url) as engine, engine.connect() as connection:
        observed, _ = fingerprint_tables(connection, schema, tables)
    if observed != fingerprint:
        raise PublicationError(
            f"candidate {schema} changed after its gate: fingerprint {observed}, "
            f"but the training-data gate passed {fingerprint}; nothing was published"
        )
    with _transaction(settings) as warehouse:
        warehouse.execute(f"CREATE SCHEMA IF NOT EXISTS {MARTS}")
        existing = {
            str(name): str(kind)
            for name, kind in warehouse.rows(
                "SELECT table_name, table_type FROM information_schema.tables "
                "WHERE table_schema = ?",
                [MARTS],
            )
        }
        for name, kind in sorted(existing.items()):
            if kind == "VIEW":
                warehouse.execute(f'DROP VIEW "{MARTS}"."{name}"')
            else:
                warehouse.execute(f'DROP TABLE "{MARTS}"."{name}"')
        for table in tables:
            warehouse.execute(
                f'CREATE VIEW "{MARTS}"."{table}" AS SELECT * FROM "{schema}"."{table}"'
            )
        warehouse.execute(
            f"INSERT INTO {GOVERNANCE}.snapshots VALUES (?, ?, ?, ?, ?, now())",
            [snapshot_id, schema, fingerprint, run_id, batch_id],
        )
        if batch_id:
            warehouse.execute(
                f"INSERT INTO {GOVERNANCE}.published_batches VALUES (?, ?, now())",
                [batch_id, snapshot_id],
            )
    return PublishedSnapshot(snapshot_id, schema, fingerprint, run_id, batch_id)


def record_publication(
    ledger: Ledger, snapshot: PublishedSnapshot, tables: Mapping[str, Any]
) -> SnapshotRecord:
    """Tell the ledger about a snapshot the warehouse published: the snapshot, then its
    batch becomes ``published``. Both steps are idempotent.

    ``tables`` are the per-table figures of the training-data gate that passed it.
    """
    run_id = snapshot.run_id if snapshot.run_id and ledger.get_run(snapshot.run_id) else None
    record = ledger.record_snapshot(
        snapshot.snapshot_id,
        schema_name=snapshot.schema_name,
        fingerprint=snapshot.fingerprint,
        run_id=run_id,
        batch_id=snapshot.batch_id,
        tables=dict(tables),
    )
    failpoint("publish.snapshot_recorded")
    batch = ledger.get_batch(snapshot.batch_id) if snapshot.batch_id else None
    if batch is not None and batch.state != "published":
        if batch.state != "gated":  # its gates passed: publication followed them
            ledger.set_batch_state(batch.batch_id, "gated", run_id=run_id)
        ledger.set_batch_state(
            batch.batch_id, "published", run_id=run_id, snapshot_id=snapshot.snapshot_id
        )
    return record


def reconcile(settings: Settings, ledger: Ledger) -> list[str]:
    """Record every snapshot the warehouse published and the ledger does not know.

    The warehouse's publishing transaction is the moment a snapshot is published; the
    ledger is told right after. A process that died between the two left marts the
    ledger cannot name: this rolls the ledger forward from the warehouse's own record
    (``governance.snapshots``), oldest first, with the figures of the gate that passed
    each. Every run calls it at its start. Returns the snapshot ids recorded.
    """
    if settings.warehouse_kind == "duckdb" and not settings.duckdb_path.is_file():
        return []
    with _transaction(settings) as warehouse:
        published = _published(warehouse, "true", [])
    recorded = []
    for snapshot in reversed(published):
        known = ledger.get_snapshot(snapshot.snapshot_id)
        batch = ledger.get_batch(snapshot.batch_id) if snapshot.batch_id else None
        if known is not None and (batch is None or batch.state == "published"):
            continue
        gates = ledger.gate_results(snapshot.run_id) if snapshot.run_id else []
        passed = [g for g in gates if g.gate == "training_data" and g.status == "pass"]
        tables = dict(passed[-1].metrics.get("tables") or {}) if passed else {}
        record_publication(ledger, snapshot, tables)
        if known is None:
            recorded.append(snapshot.snapshot_id)
    return recorded


def drop_candidate(settings: Settings, schema: str) -> bool:
    """Drop an unpublished candidate schema (a blocked run's marts); False if there was none.

    A published snapshot is never dropped here.
    """
    _check_schema(schema)
    if settings.warehouse_kind == "duckdb" and not settings.duckdb_path.is_file():
        return False
    with _transaction(settings) as warehouse:
        if _published(warehouse, "schema_name = ?", [schema]):
            raise PublicationError(f"{schema} holds a published snapshot; it is not a candidate")
        exists = warehouse.rows(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?", [schema]
        )[0][0]
        if exists:
            warehouse.execute(f'DROP SCHEMA "{schema}" CASCADE')
    return bool(exists)


def retire_snapshots(
    settings: Settings, *, pinned: Iterable[str] = (), keep: int = SNAPSHOTS_KEPT
) -> list[str]:
    """Drop the schemas of old published snapshots; return the snapshot ids dropped.

    The newest ``keep`` snapshots (the current one among them) and every snapshot in
    ``pinned`` (those a running retraining run reads) are kept; their rows in
    ``governance.snapshots`` stay as the record.
    """
    pinned = set(pinned)
    dropped = []
    with _transaction(settings) as warehouse:
        snapshots = _published(warehouse, "true", [])
        for snapshot in snapshots[keep:]:
            if snapshot.snapshot_id in pinned:
                continue
            exists = warehouse.rows(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = ?",
                [snapshot.schema_name],
            )[0][0]
            if exists:
                warehouse.execute(f'DROP SCHEMA "{snapshot.schema_name}" CASCADE')
                dropped.append(snapshot.snapshot_id)
    return dropped


@dataclass(frozen=True)
class PurgedFile:
    """What a purge did to one file of the batch."""

    table: str
    sha256: str
    raw_rows: int
    quarantined_rows: int
    kept_because: str | None


def purge_batch(settings: Settings, batch_id: str) -> list[PurgedFile]:
    """Delete a batch's raw and quarantined rows (personal data included) in one transaction.

    A file whose same content also came with another batch that was not purged is kept
    (its rows are that batch's too) and reported with the reason. The batch's
    ``batch_files`` rows go as well, so nothing can read it again, and what was done is
    logged in ``governance.purged_batches`` in the same transaction: purging a batch
    whose rows are already gone returns that log (a purge the ledger never heard of,
    because the process died, is finished from it).
    """
    check_batch_id(batch_id)
    purged = []
    with _transaction(settings) as warehouse:
        files = warehouse.rows(
            f"SELECT table_name, file_sha256 FROM {GOVERNANCE}.batch_files WHERE batch_id = ? "
            "ORDER BY table_name",
            [batch_id],
        )
        logged = warehouse.rows(
            f"SELECT files FROM {GOVERNANCE}.purged_batches WHERE batch_id = ?", [batch_id]
        )
        if not files and logged:
            return [PurgedFile(**f) for f in json.loads(str(logged[0][0]))]
        published = warehouse.rows(
            f"SELECT count(*) FROM {GOVERNANCE}.published_batches WHERE batch_id = ?", [batch_id]
        )[0][0]
        if published:
            raise PublicationError(f"batch {batch_id} was published: it cannot be purged")
        for table, sha256 in files:
            shared = warehouse.rows(
                f"SELECT min(batch_id) FROM {GOVERNANCE}.batch_files "
                "WHERE table_name = ? AND file_sha256 = ? AND batch_id <> ?",
                [table, sha256, batch_id],
            )[0][0]
            if shared:
                purged.append(PurgedFile(table, sha256, 0, 0, f"also delivered by {shared}"))
                continue
            counts = []
            for schema, column in (("raw", "_file_sha256"), ("quarantine", "file_sha256")):
                exists = warehouse.rows(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = ? AND table_name = ?",
                    [schema, table],
                )[0][0]
                if not exists:
                    counts.append(0)
                    continue
                n = warehouse.rows(
                    f"SELECT count(*) FROM {schema}.{table} WHERE {column} = ?", [sha256]
                )[0][0]
                warehouse.execute(f"DELETE FROM {schema}.{table} WHERE {column} = ?", [sha256])
                counts.append(int(n))
            purged.append(PurgedFile(table, sha256, counts[0], counts[1], None))
        warehouse.execute(f"DELETE FROM {GOVERNANCE}.batch_files WHERE batch_id = ?", [batch_id])
        warehouse.execute(f"DELETE FROM {GOVERNANCE}.purged_batches WHERE batch_id = ?", [batch_id])
        warehouse.execute(
            f"INSERT INTO {GOVERNANCE}.purged_batches VALUES (?, ?, now())",
            [batch_id, json.dumps([asdict(f) for f in purged])],
        )
    return purged


_BATCH_FILE_KEYS = (
    "file_name",
    "table",
    "sha256",
    "rows_read",
    "rows_accepted",
    "rows_quarantined",
)


def land(
    settings: Settings,
    ledger: Ledger,
    batch_id: str,
    files: Sequence[dict[str, Any]],
    *,
    run_id: str | None = None,
) -> BatchRecord:
    """Record a batch as landed: its files in the warehouse (what dbt may read once it is
    published), then its state in the ledger. ``files`` are the ingest manifest's."""
    register_batch(settings, batch_id, [(str(f["table"]), str(f["sha256"])) for f in files])
    failpoint("land.warehouse_committed")  # the rerun registers the same files again
    kept = [{key: f[key] for key in _BATCH_FILE_KEYS} for f in files]
    return ledger.land_batch(batch_id, kept, run_id=run_id)


def purge(
    settings: Settings,
    ledger: Ledger,
    batch_id: str,
    *,
    signer: Signer,
    policy: Policy,
    reason: str,
) -> tuple[BatchRecord, list[PurgedFile]]:
    """Delete a blocked batch's raw and quarantined rows and record the purge in the ledger.

    Only a blocked batch can be purged, and only by an approver of ``policy`` (the policy
    in force) signing with the key it lists for them. The warehouse rows go first, in one
    transaction; the ledger then marks the batch ``purged`` (who, why, what was deleted,
    the signed statement) and forgets the purged files' load records, so the same content
    can land again later. A purge interrupted between the two is finished by running it
    again: the warehouse's purge log tells what was deleted.
    """
    from shelfguard.policy_approval import signer_problem

    problem = signer_problem(policy, signer, "purge batches")
    if problem:
        raise PublicationError(problem)
    if not reason.strip():
        raise PublicationError("say why the batch is purged (--reason TEXT)")
    batch = ledger.get_batch(batch_id)
    if batch is None:
        raise PublicationError(f"unknown batch {batch_id!r} (see `shelfguard batches`)")
    if batch.state != "blocked":
        raise PublicationError(
            f"batch {batch_id} is {batch.state}: only a blocked batch can be purged"
        )
    purged = purge_batch(settings, batch_id)
    failpoint("purge.warehouse_committed")  # the rerun reads what was deleted from the log
    deleted = sum(f.raw_rows + f.quarantined_rows for f in purged)
    kept = [f for f in purged if f.kept_because]
    summary = f"{reason.strip()} ({deleted} rows deleted"
    summary += f"; {len(kept)} file(s) kept: also in another batch)" if kept else ")"
    for f in purged:
        if not f.kept_because:
            ledger.forget_ingested_file(f"raw.{f.table}", f.sha256)
    failpoint("purge.files_forgotten")
    at = signing_time()
    envelope = signer.sign(
        purge_statement(signer.name, at, batch_id=batch_id, policy_sha256=policy.sha256)
    )
    record = ledger.set_batch_state(
        batch_id, "purged", actor=signer.name, reason=summary, at=at, attestation=envelope
    )
    return record, purged
