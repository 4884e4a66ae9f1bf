"""Loading into the PostgreSQL warehouse: parsed in DuckDB, then COPY in ONE transaction.

Under a transaction-level advisory lock (:data:`PG_INGEST_LOCK`) so that two ingests,
or an ingest and a retention purge, into one warehouse run one after the other.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from shelfguard.data.ingest.manifest import FileManifest
from shelfguard.data.ingest.parse import (
    _file_manifest,
    _parse_file,
    _Parsed,
    _register_lines,
    _register_quarantined,
    _sql_str,
)
from shelfguard.data.ingest.pseudonymise import (
    _RAW_META_SQL,
    KeySource,
    _clear_columns,
    _pseudonym_relation,
    _register_pseudonyms,
    _stored_select,
    _unregister_pseudonyms,
)
from shelfguard.data.ingest.scan import _Scanned
from shelfguard.data.ingest.warehouse import Progress
from shelfguard.data.pseudonyms import pseudonym
from shelfguard.data.wands import QUARANTINE_COLUMNS, RAW_META, SPECS, IngestError

_PG_TYPES = {
    "DOUBLE": "double precision",
    "BLOB": "bytea",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}
#: Key of the transaction-level advisory lock that serialises ingests into one warehouse.
PG_INGEST_LOCK = 0x5347_494E_4745_5354  # "SGINGEST"
# PostgreSQL's CSV format is what DuckDB writes: "," delimiter, '"' quoting, NULL as an
# empty unquoted field, an empty string as "".
_PG_COPY = "FROM STDIN WITH (FORMAT csv, HEADER false)"


def _pg_type(sql_type: str) -> str:
    return _PG_TYPES.get(sql_type, sql_type)


def pg_table_ddl() -> list[str]:
    """The PostgreSQL statements creating ``raw.*`` and ``quarantine.*`` (idempotent)."""
    statements = ["CREATE SCHEMA IF NOT EXISTS raw", "CREATE SCHEMA IF NOT EXISTS quarantine"]
    meta_cols = ", ".join(f"{n} {_pg_type(t)}" for n, t in RAW_META.items())
    quarantine_cols = ", ".join(f"{n} {_pg_type(t)}" for n, t in QUARANTINE_COLUMNS.items())
    for spec in SPECS:
        cols = ", ".join(f'"{name}" {_pg_type(t)}' for name, t in spec.stored_columns.items())
        statements += [
            f"CREATE TABLE IF NOT EXISTS raw.{spec.table} ({cols}, {meta_cols})",
            # Re-ingesting replaces a file's rows by its hash, and the gates read a batch by it.
            f"CREATE INDEX IF NOT EXISTS {spec.table}_file_sha256_idx "
            f"ON raw.{spec.table} (_file_sha256)",
            f"CREATE TABLE IF NOT EXISTS quarantine.{spec.table} ({quarantine_cols})",
        ]
        if spec.personal:
            # Quarantine keeps a rejected line's original bytes, personal fields included:
            # only the warehouse's owner reads them, until the retention purge deletes them.
            statements.append(f"REVOKE ALL ON quarantine.{spec.table} FROM PUBLIC")
    return statements


def _pg_migrate(cur: Any, key: KeySource) -> None:
    """:func:`_migrate_duckdb` on PostgreSQL: rebuild a ``raw.*`` table an older release
    stored personal columns in, in the batch's transaction. The views reading it (the
    staging view, built from the clear columns) are dropped with it; dbt builds them again."""
    from psycopg2.extras import execute_values

    for spec in SPECS:
        cur.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'raw' AND table_name = %s",
            [spec.table],
        )
        if not _clear_columns(spec, [str(name) for (name,) in cur.fetchall()]):
            continue
        for stored, source in spec.pseudonyms:
            relation = _pseudonym_relation(stored)
            cur.execute(
                f'SELECT DISTINCT "{source}" FROM raw.{spec.table} WHERE "{source}" IS NOT NULL'
            )
            values = [str(value) for (value,) in cur.fetchall()]
            cur.execute(
                f"CREATE TEMP TABLE {relation} (value text PRIMARY KEY, pseudonym text) "
                "ON COMMIT DROP"
            )
            execute_values(
                cur,
                f"INSERT INTO {relation} (value, pseudonym) VALUES %s",
                [(value, pseudonym(key(), value)) for value in values],
            )
        select, joins = _stored_select(spec)
        rebuilt = f"_{spec.table}_pseudonymised"
        cur.execute(
            f"CREATE TABLE raw.{rebuilt} AS SELECT {select}, {_RAW_META_SQL} "
            f"FROM raw.{spec.table} AS t {joins}"
        )
        cur.execute(f"DROP TABLE raw.{spec.table} CASCADE")
        cur.execute(f"ALTER TABLE raw.{rebuilt} RENAME TO {spec.table}")


@contextmanager
def locked_transaction(url: str) -> Iterator[Any]:
    """A cursor in one PostgreSQL transaction that holds the ingest lock (:data:`PG_INGEST_LOCK`,
    taken by loads and purges alike): committed when the block ends, rolled back when it
    raises (unless the server went away and took the transaction with it)."""
    pg = pg_connect(url)
    try:
        with pg.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [PG_INGEST_LOCK])
            yield cur
        pg.commit()
    except BaseException:
        if not pg.closed:
            pg.rollback()
        raise
    finally:
        pg.close()


def pg_connect(url: str) -> Any:
    """A psycopg2 connection (transaction open on first statement) from a SQLAlchemy URL."""
    import psycopg2
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    args: dict[str, Any] = parsed.translate_connect_args(username="user", database="dbname")
    args.update({k: v for k, v in parsed.query.items() if isinstance(v, str)})
    connection = psycopg2.connect(**args)
    connection.set_client_encoding("UTF8")
    return connection


def _numbered_rows(con: duckdb.DuckDBPyConnection, parsed: _Parsed) -> str:
    """The accepted rows with their source line (SQL); registers ``_lines`` (row -> line)."""
    _register_lines(con, parsed)
    return (
        f"(SELECT t.*, l._line_number FROM (SELECT *, rowid AS _idx FROM {parsed.temp_table}) "
        "AS t JOIN _lines AS l USING (_idx))"
    )


def _pg_write_file(
    con: duckdb.DuckDBPyConnection,
    cur: Any,
    parsed: _Parsed,
    batch_id: str,
    ingested_at: str,
    workdir: Path,
    key: KeySource,
) -> FileManifest:
    """Replace this file's rows in PostgreSQL (inside the batch transaction) with COPY."""
    spec, item = parsed.item.spec, parsed.item
    rows_sql = _numbered_rows(con, parsed)
    _register_quarantined(con, parsed)
    _register_pseudonyms(con, spec, parsed.temp_table, key)
    cols = ", ".join(f'"{name}"' for name in spec.stored_columns)
    select, joins = _stored_select(spec)
    raw_csv, quarantine_csv = workdir / f"raw_{spec.table}.csv", workdir / f"q_{spec.table}.csv"
    stamp = _sql_str(ingested_at)
    con.execute(
        f"COPY (SELECT {select}, t._line_number, {_sql_str(batch_id)}, {_sql_str(item.sha256)}, "
        f"{stamp} FROM {rows_sql} AS t {joins} ORDER BY t._line_number) "
        f"TO {_sql_str(str(raw_csv))} (FORMAT csv, HEADER false)"
    )
    _unregister_pseudonyms(con, spec)
    con.execute(
        f"COPY (SELECT {_sql_str(batch_id)}, {_sql_str(item.path.name)}, {_sql_str(item.sha256)}, "
        "line_number, reason, replace(detail, chr(0), '\\0'), '\\x' || hex(original_line), "
        f"{stamp} FROM _quarantined ORDER BY line_number) "
        f"TO {_sql_str(str(quarantine_csv))} (FORMAT csv, HEADER false)"
    )
    for view in ("_lines", "_quarantined"):
        con.unregister(view)
    con.execute(f"DROP TABLE {parsed.temp_table}")

    cur.execute(f"DELETE FROM raw.{spec.table} WHERE _file_sha256 = %s", [item.sha256])
    cur.execute(f"DELETE FROM quarantine.{spec.table} WHERE file_sha256 = %s", [item.sha256])
    targets = (
        (f"raw.{spec.table} ({cols}, {', '.join(RAW_META)})", raw_csv, parsed.accepted),
        (
            f"quarantine.{spec.table} ({', '.join(QUARANTINE_COLUMNS)})",
            quarantine_csv,
            len(parsed.quarantined),
        ),
    )
    for table, path, expected in targets:
        with path.open("rb") as data:
            cur.copy_expert(f"COPY {table} {_PG_COPY}", data)
        if cur.rowcount != expected:
            raise IngestError(
                f"{item.path.name}: {expected} rows to load into {table.split(' ')[0]} but "
                f"PostgreSQL copied {cur.rowcount}; refusing to lose rows silently"
            )
        path.unlink()
    return _file_manifest(parsed)


def _load_postgres(
    url: str,
    todo: Sequence[_Scanned],
    batch_id: str,
    progress: Progress | None,
    key: KeySource,
) -> dict[str, FileManifest]:
    """Parse in an in-memory DuckDB, then COPY into PostgreSQL: ONE transaction for the batch."""
    loaded: dict[str, FileManifest] = {}
    with tempfile.TemporaryDirectory(prefix="shelfguard-ingest-") as tmp:
        workdir = Path(tmp)
        con = duckdb.connect(":memory:", config={"temp_directory": str(workdir / "duckdb")})
        try:
            parsed = []
            for number, item in enumerate(todo, start=1):
                if progress:
                    progress(f"parsing {item.path.name}", number - 1, len(todo))
                parsed.append(_parse_file(con, item, workdir))
            # An unreachable warehouse is a transient error (Airflow retries), not a refusal.
            with locked_transaction(url) as cur:
                cur.execute("CREATE SCHEMA IF NOT EXISTS raw")
                _pg_migrate(cur, key)
                for statement in pg_table_ddl():
                    cur.execute(statement)
                cur.execute("SELECT now()::text")
                ingested_at = str(cur.fetchone()[0])
                for number, result in enumerate(parsed, start=1):
                    if progress:
                        progress(
                            f"loading {result.item.path.name} into PostgreSQL",
                            number - 1,
                            len(parsed),
                        )
                    loaded[result.item.spec.table] = _pg_write_file(
                        con, cur, result, batch_id, ingested_at, workdir, key
                    )
        finally:
            con.close()
    return loaded
