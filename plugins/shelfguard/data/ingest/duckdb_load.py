"""Loading into the DuckDB warehouse: the whole batch in ONE DuckDB transaction."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb

from shelfguard.data import duckdb_wait
from shelfguard.data.ingest.manifest import FileManifest
from shelfguard.data.ingest.parse import (
    _file_manifest,
    _parse_file,
    _Parsed,
    _register_lines,
    _register_quarantined,
)
from shelfguard.data.ingest.pseudonymise import (
    _RAW_META_SQL,
    KeySource,
    _clear_columns,
    _register_pseudonyms,
    _stored_select,
    _unregister_pseudonyms,
)
from shelfguard.data.ingest.scan import _Scanned
from shelfguard.data.ingest.warehouse import Progress
from shelfguard.data.wands import QUARANTINE_COLUMNS, RAW_META, SPECS


def _columns_sql(columns: dict[str, str]) -> str:
    return ", ".join(f"{name} {sql_type}" for name, sql_type in columns.items())


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    for spec in SPECS:
        cols = ", ".join(f'"{name}" {sql_type}' for name, sql_type in spec.stored_columns.items())
        con.execute(
            f"CREATE TABLE IF NOT EXISTS raw.{spec.table} ({cols}, {_columns_sql(RAW_META)})"
        )
        con.execute(
            f"CREATE TABLE IF NOT EXISTS quarantine.{spec.table} ({_columns_sql(QUARANTINE_COLUMNS)})"
        )


def _migrate_duckdb(con: duckdb.DuckDBPyConnection, key: KeySource) -> None:
    """Pseudonymise, in place, a ``raw.*`` table an older release stored personal columns in.

    The table is rebuilt without them (inside one transaction), and the views that read
    it are dropped: they were built from the clear columns (the staging view by a release
    that hashed in SQL, with its key in the view's text); dbt builds them again.
    """
    for spec in SPECS:
        existing = [
            str(name)
            for (name,) in con.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'raw' AND table_name = ?",
                [spec.table],
            ).fetchall()
        ]
        if not _clear_columns(spec, existing):
            continue
        _register_pseudonyms(con, spec, f"raw.{spec.table}", key)
        select, joins = _stored_select(spec)
        views = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal AND sql ILIKE ?",
            [f"%{spec.table}%"],
        ).fetchall()
        rebuilt = f"_{spec.table}_pseudonymised"
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"CREATE TABLE raw.{rebuilt} AS SELECT {select}, {_RAW_META_SQL} "
                f"FROM raw.{spec.table} AS t {joins}"
            )
            con.execute(f"DROP TABLE raw.{spec.table}")
            con.execute(f"ALTER TABLE raw.{rebuilt} RENAME TO {spec.table}")
            for schema, view in views:
                con.execute(f'DROP VIEW IF EXISTS "{schema}"."{view}"')
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            _unregister_pseudonyms(con, spec)
        con.execute("CHECKPOINT")


def _write_file(
    con: duckdb.DuckDBPyConnection, parsed: _Parsed, batch_id: str, key: KeySource
) -> FileManifest:
    """Replace this file's rows in ``raw.*`` and ``quarantine.*`` (inside the batch transaction)."""
    item = parsed.item
    spec = item.spec
    _register_lines(con, parsed)
    _register_quarantined(con, parsed)
    _register_pseudonyms(con, spec, parsed.temp_table, key)
    con.execute(f"DELETE FROM raw.{spec.table} WHERE _file_sha256 = ?", [item.sha256])
    con.execute(f"DELETE FROM quarantine.{spec.table} WHERE file_sha256 = ?", [item.sha256])
    cols = ", ".join(f'"{name}"' for name in spec.stored_columns)
    select, joins = _stored_select(spec)
    con.execute(
        f"INSERT INTO raw.{spec.table} ({cols}, {', '.join(RAW_META)}) "
        f"SELECT {select}, l._line_number, ?, ?, now() "
        f"FROM (SELECT *, rowid AS _idx FROM {parsed.temp_table}) AS t JOIN _lines AS l USING (_idx) "
        f"{joins}",
        [batch_id, item.sha256],
    )
    _unregister_pseudonyms(con, spec)
    con.execute(
        f"INSERT INTO quarantine.{spec.table} SELECT ?, ?, ?, line_number, reason, detail, "
        "original_line, now() FROM _quarantined",
        [batch_id, item.path.name, item.sha256],
    )
    con.unregister("_lines")
    con.unregister("_quarantined")
    con.execute(f"DROP TABLE {parsed.temp_table}")
    return _file_manifest(parsed)


def _load_duckdb(
    duckdb_path: Path,
    todo: Sequence[_Scanned],
    batch_id: str,
    progress: Progress | None,
    key: KeySource,
) -> dict[str, FileManifest]:
    """Parse and load into the DuckDB file: ONE transaction for the whole batch."""
    loaded: dict[str, FileManifest] = {}
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb_wait.connect(duckdb_path)
    try:
        _migrate_duckdb(con, key)
        _ensure_tables(con)
        parsed = []
        for number, item in enumerate(todo, start=1):
            if progress:
                progress(f"parsing {item.path.name}", number - 1, len(todo))
            parsed.append(_parse_file(con, item, duckdb_path.parent))
        con.execute("BEGIN TRANSACTION")
        try:
            for result in parsed:
                loaded[result.item.spec.table] = _write_file(con, result, batch_id, key)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return loaded
