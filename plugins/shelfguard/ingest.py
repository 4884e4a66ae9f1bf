"""Ingestion: raw files -> ``raw.*`` tables, bad rows -> ``quarantine.*``, manifest -> ledger.

The files follow the WANDS layout (tab-separated, a header line, no quoting).
DuckDB parses and casts them in bulk; Python touches only the rejected lines,
to copy their original bytes into quarantine. Guarantees:

- rows read = rows accepted + rows quarantined, for every file, or the load is
  rolled back (invariant 4: no row is lost silently);
- a file-level problem (missing required column, unreadable or empty file)
  stops the whole batch before anything is written;
- the same file content is loaded into the same table once: re-ingesting is a
  no-op (invariant 7).

The warehouse is the DuckDB file of the embedded default or a PostgreSQL database
(``SHELFGUARD_WAREHOUSE_URL``). On PostgreSQL the parsing and the quarantine decisions
are the same DuckDB code, run in an in-memory database; the accepted and quarantined
rows of every file of the batch are then bulk-loaded with ``COPY ... FROM STDIN`` in
ONE PostgreSQL transaction, under a transaction-level advisory lock so that two
ingests into the same warehouse run one after the other. The tables and their column
names and types are the DuckDB ones (``BIGINT``, ``VARCHAR``, ``double precision``,
``timestamp``, ``bytea`` for the original bytes). One rule is PostgreSQL's own: its
text cannot hold a NUL character, so a line with one in a text field is quarantined
there (reason ``nul_character``) where DuckDB would accept it.

The ledger is another database, so the batch cannot commit in both at once. The order
is the same on both warehouses: the warehouse transaction commits first, the manifest
is recorded in the ledger after it. A crash in between leaves rows the ledger does not
know of, never a ledger entry without its rows; the next ingest of the same files then
loads them again, replacing the rows of the same file content (matched on
``_file_sha256``), so nothing is duplicated.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np
import pyarrow as pa

from shelfguard.ledger import IngestFileRecord, Ledger

Progress = Callable[[str, int, int], None]

_CHUNK = 16 * 1024 * 1024


class IngestError(Exception):
    """A file-level problem: the batch is refused and nothing is loaded."""


@dataclass(frozen=True)
class FileSpec:
    """How one source file maps to one raw table."""

    key: str
    file_name: str
    table: str
    columns: dict[str, str]
    required: bool


_PRODUCT_COLUMNS = {
    "product_id": "BIGINT",
    "product_name": "VARCHAR",
    "product_class": "VARCHAR",
    "category_hierarchy": "VARCHAR",
    "product_description": "VARCHAR",
    "product_features": "VARCHAR",
    # WANDS writes counts as floats ("15.0"); staging casts them to integers.
    "rating_count": "DOUBLE",
    "average_rating": "DOUBLE",
    "review_count": "DOUBLE",
}

SPECS: tuple[FileSpec, ...] = (
    FileSpec("product", "product.csv", "products", _PRODUCT_COLUMNS, required=True),
    FileSpec(
        "query",
        "query.csv",
        "queries",
        {"query_id": "BIGINT", "query": "VARCHAR", "query_class": "VARCHAR"},
        required=False,
    ),
    FileSpec(
        "label",
        "label.csv",
        "judgements",
        {"id": "BIGINT", "query_id": "BIGINT", "product_id": "BIGINT", "label": "VARCHAR"},
        required=False,
    ),
    FileSpec(
        "search_log",
        "search_log.csv",
        "search_log",
        {
            "search_id": "VARCHAR",
            "session_id": "VARCHAR",
            "user_id": "VARCHAR",
            "user_email": "VARCHAR",
            "searched_at": "TIMESTAMP",
            "query": "VARCHAR",
            "product_id": "BIGINT",
            "position": "INTEGER",
            "clicked": "SMALLINT",
            "added_to_cart": "SMALLINT",
            "purchased": "SMALLINT",
        },
        required=False,
    ),
    FileSpec(
        "catalog_changes",
        "catalog_changes.csv",
        "catalog_changes",
        {"change_id": "BIGINT", "changed_at": "TIMESTAMP", "op": "VARCHAR", **_PRODUCT_COLUMNS},
        required=False,
    ),
)

# DuckDB's reject error types -> the reason codes governance owners read.
_REASONS = {
    "CAST": "unparseable_value",
    "MISSING COLUMNS": "too_few_fields",
    "TOO MANY COLUMNS": "too_many_fields",
    "INVALID ENCODING": "invalid_utf8",
    "INVALID UNICODE": "invalid_utf8",
    "UNQUOTED VALUE": "malformed_line",
    "INVALID STATE": "malformed_line",
    "LINE SIZE OVER MAXIMUM": "line_too_long",
}
BLANK_LINE = "blank_line"
#: PostgreSQL only: its text type cannot store U+0000, which DuckDB accepts.
NUL_CHARACTER = "nul_character"


@dataclass(frozen=True)
class FileManifest:
    """What happened to one file: the batch manifest's row for it."""

    file_name: str
    table: str
    sha256: str
    bytes: int
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_by_reason: dict[str, int]
    extra_columns: list[str] = field(default_factory=list)
    already_ingested: bool = False


@dataclass(frozen=True)
class IngestManifest:
    """The batch manifest: one entry per file found in the source folder."""

    batch_id: str
    source: str
    files: list[FileManifest]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, the one ``shelfguard ingest --json`` prints."""
        return {
            "batch_id": self.batch_id,
            "source": self.source,
            "files": [asdict(f) for f in self.files],
        }

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


@dataclass
class _Scanned:
    spec: FileSpec
    path: Path
    header: list[str]
    sha256: str = ""
    size: int = 0
    line_starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    line_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def extra_columns(self) -> list[str]:
        return [c for c in self.header if c not in self.spec.columns]

    @property
    def data_lines(self) -> int:
        # Line 1 is the header; a file is "lines" split on \n, last one unterminated.
        return max(len(self.line_starts) - 1, 0)

    def line_bytes(self, handle: BinaryIO, line_number: int) -> bytes:
        """Original bytes of a 1-based line, without its line terminator."""
        start = int(self.line_starts[line_number - 1])
        handle.seek(start)
        raw = handle.read(int(self.line_ends[line_number - 1]) - start)
        return raw[:-1] if raw.endswith(b"\r") else raw


def _read_header(spec: FileSpec, path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            first = handle.readline()
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read the file: {exc.strerror or exc}") from exc
    if not first.strip():
        raise IngestError(f"{path.name}: the file is empty (no header line)")
    try:
        header = first.rstrip(b"\r\n").decode("utf-8").split("\t")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path.name}: line 1 (header) is not valid UTF-8") from exc
    header = [name.lstrip("\ufeff").strip() for name in header]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise IngestError(f"{path.name}: header repeats column(s) {', '.join(duplicated)}")
    missing = [name for name in spec.columns if name not in header]
    if missing:
        extra = [name for name in header if name not in spec.columns]
        hint = f"; unexpected column(s): {', '.join(extra)}" if extra else ""
        raise IngestError(
            f"{path.name}: missing required column(s) {', '.join(missing)}"
            f" (expected {', '.join(spec.columns)}{hint})"
        )
    return header


def _scan(item: _Scanned) -> None:
    """Hash the file and find every line's byte span, in one pass of vectorised chunks."""
    digest = hashlib.sha256()
    newlines: list[np.ndarray] = []
    offset = 0
    with item.path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            found = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 0x0A)
            newlines.append(found.astype(np.int64) + offset)
            offset += len(chunk)
    ends = np.concatenate(newlines) if newlines else np.zeros(0, np.int64)
    if offset and (len(ends) == 0 or ends[-1] != offset - 1):
        ends = np.append(ends, offset)  # last line has no terminator
    item.sha256 = digest.hexdigest()
    item.size = offset
    item.line_ends = ends
    item.line_starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)


def discover(source: Path) -> list[_Scanned]:
    """Find the known files in ``source`` and check their headers, loading nothing."""
    if not source.is_dir():
        raise IngestError(f"{source}: not a folder")
    found = []
    for spec in SPECS:
        path = source / spec.file_name
        if not path.exists():
            if spec.required:
                raise IngestError(f"{source}: required file {spec.file_name} is missing")
            continue
        if not path.is_file():
            raise IngestError(f"{path}: not a regular file")
        found.append(_Scanned(spec, path, _read_header(spec, path)))
    return found


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    for spec in SPECS:
        cols = ", ".join(f'"{name}" {sql_type}' for name, sql_type in spec.columns.items())
        con.execute(
            f"CREATE TABLE IF NOT EXISTS raw.{spec.table} ({cols}, _line_number BIGINT, "
            "_batch_id VARCHAR, _file_sha256 VARCHAR, _ingested_at TIMESTAMP WITH TIME ZONE)"
        )
        con.execute(
            f"CREATE TABLE IF NOT EXISTS quarantine.{spec.table} ("
            "batch_id VARCHAR, file_name VARCHAR, file_sha256 VARCHAR, line_number BIGINT, "
            "reason VARCHAR, detail VARCHAR, original_line BLOB, "
            "quarantined_at TIMESTAMP WITH TIME ZONE)"
        )


def _read_csv_sql(item: _Scanned, rejects: str) -> str:
    # Columns are declared in the file's own order; extra ones are read as text and not kept.
    columns = {name: item.spec.columns.get(name, "VARCHAR") for name in item.header}
    columns_sql = "{" + ", ".join(f"'{n}': '{t}'" for n, t in columns.items()) + "}"
    path = str(item.path).replace("'", "''")
    return (
        f"read_csv('{path}', delim='\\t', quote='', escape='', header=true, "
        f"auto_detect=false, strict_mode=true, columns={columns_sql}, "
        f"store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan', "
        "timestampformat='%Y-%m-%dT%H:%M:%SZ')"
    )


def _quarantine_list(
    con: duckdb.DuckDBPyConnection, item: _Scanned, rejects: str
) -> list[tuple[int, str, str]]:
    """(line, reason, detail) for every data line DuckDB rejected or skipped as blank."""
    rejected = con.execute(
        f"SELECT line, list(DISTINCT error_type::VARCHAR ORDER BY error_type::VARCHAR), "
        f"string_agg(DISTINCT coalesce(column_name, '') || ': ' || error_message, ' | ') "
        f"FROM {rejects} GROUP BY line ORDER BY line"
    ).fetchall()
    quarantined = [
        (int(line), _REASONS.get(types[0], "malformed_line"), str(detail)[:1000])
        for line, types, detail in rejected
    ]
    # DuckDB skips blank lines without a word; they are rows read, so they are quarantined.
    lengths = item.line_ends - item.line_starts
    candidates = np.flatnonzero(lengths[1:] <= 1) + 2  # 1-based; a lone "\r" is blank too
    rejected_lines = {line for line, _, _ in quarantined}
    with item.path.open("rb") as handle:
        for line in candidates.tolist():
            if line not in rejected_lines and not item.line_bytes(handle, line):
                quarantined.append((line, BLANK_LINE, "empty line"))
    return sorted(quarantined)


@dataclass
class _Parsed:
    item: _Scanned
    temp_table: str
    accepted: int
    quarantined: list[tuple[int, str, str]]


def _parse_file(con: duckdb.DuckDBPyConnection, item: _Scanned) -> _Parsed:
    """Parse one file into a temporary table; count and list the lines it rejected."""
    spec = item.spec
    rejects = f"rejects_{spec.table}"
    temp_table = f"_load_{spec.table}"
    try:
        # Outside any transaction on purpose: committed temp rows get rowids 0..n-1 in file
        # order, which is how accepted rows are matched with their line numbers below.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {temp_table} AS "
            f"SELECT * FROM {_read_csv_sql(item, rejects)}"
        )
    except duckdb.Error as exc:
        raise IngestError(f"{item.path.name}: DuckDB could not parse the file: {exc}") from exc
    quarantined = _quarantine_list(con, item, rejects)
    accepted = int(con.execute(f"SELECT count(*) FROM {temp_table}").fetchall()[0][0])
    if accepted + len(quarantined) != item.data_lines:
        raise IngestError(
            f"{item.path.name}: {item.data_lines} rows read but {accepted} accepted + "
            f"{len(quarantined)} quarantined; refusing to lose rows silently"
        )
    return _Parsed(item, temp_table, accepted, quarantined)


def _accepted_line_numbers(parsed: _Parsed) -> np.ndarray:
    """Source line of every accepted row, in row order (rowid i -> element i)."""
    # DuckDB keeps the file's row order, so accepted row i sits on the i-th line not quarantined.
    return np.setdiff1d(
        np.arange(2, parsed.item.data_lines + 2, dtype=np.int64),
        np.array([line for line, _, _ in parsed.quarantined], dtype=np.int64),
        assume_unique=True,
    )


def _register_quarantined(con: duckdb.DuckDBPyConnection, parsed: _Parsed) -> None:
    """The quarantined lines, with their original bytes, as the DuckDB view ``_quarantined``."""
    item, quarantined = parsed.item, parsed.quarantined
    with item.path.open("rb") as handle:
        originals = [item.line_bytes(handle, line) for line, _, _ in quarantined]
    con.register(
        "_quarantined",
        pa.table(
            {
                "line_number": pa.array([q[0] for q in quarantined], pa.int64()),
                "reason": pa.array([q[1] for q in quarantined], pa.string()),
                "detail": pa.array([q[2] for q in quarantined], pa.string()),
                "original_line": pa.array(originals, pa.binary()),
            }
        ),
    )


def _file_manifest(parsed: _Parsed) -> FileManifest:
    item, quarantined = parsed.item, parsed.quarantined
    by_reason: dict[str, int] = {}
    for _, reason, _ in quarantined:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    return FileManifest(
        file_name=item.path.name,
        table=f"raw.{item.spec.table}",
        sha256=item.sha256,
        bytes=item.size,
        rows_read=item.data_lines,
        rows_accepted=parsed.accepted,
        rows_quarantined=len(quarantined),
        quarantine_by_reason=dict(sorted(by_reason.items())),
        extra_columns=item.extra_columns,
    )


def _write_file(con: duckdb.DuckDBPyConnection, parsed: _Parsed, batch_id: str) -> FileManifest:
    """Replace this file's rows in ``raw.*`` and ``quarantine.*`` (inside the batch transaction)."""
    item = parsed.item
    spec = item.spec
    con.register(
        "_lines",
        pa.table(
            {"_idx": np.arange(parsed.accepted), "_line_number": _accepted_line_numbers(parsed)}
        ),
    )
    _register_quarantined(con, parsed)
    con.execute(f"DELETE FROM raw.{spec.table} WHERE _file_sha256 = ?", [item.sha256])
    con.execute(f"DELETE FROM quarantine.{spec.table} WHERE file_sha256 = ?", [item.sha256])
    cols = ", ".join(f'"{name}"' for name in spec.columns)
    con.execute(
        f"INSERT INTO raw.{spec.table} ({cols}, _line_number, _batch_id, _file_sha256, _ingested_at) "
        f"SELECT {cols}, l._line_number, ?, ?, now() "
        f"FROM (SELECT *, rowid AS _idx FROM {parsed.temp_table}) AS t JOIN _lines AS l USING (_idx)",
        [batch_id, item.sha256],
    )
    con.execute(
        f"INSERT INTO quarantine.{spec.table} SELECT ?, ?, ?, line_number, reason, detail, "
        "original_line, now() FROM _quarantined",
        [batch_id, item.path.name, item.sha256],
    )
    con.unregister("_lines")
    con.unregister("_quarantined")
    con.execute(f"DROP TABLE {parsed.temp_table}")
    return _file_manifest(parsed)


def _from_record(record: IngestFileRecord) -> FileManifest:
    return FileManifest(
        file_name=record.file_name,
        table=record.table_name,
        sha256=record.sha256,
        bytes=record.bytes,
        rows_read=record.rows_read,
        rows_accepted=record.rows_accepted,
        rows_quarantined=record.rows_quarantined,
        quarantine_by_reason=dict(record.quarantine_by_reason),
        extra_columns=list(record.extra_columns),
        already_ingested=True,
    )


def batch_id_for(items: Sequence[_Scanned]) -> str:
    """A batch is named by the content it loads: same files, same id."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.spec.file_name):
        digest.update(f"{item.spec.file_name}\0{item.sha256}\n".encode())
    return "batch-" + digest.hexdigest()[:16]


def _load_duckdb(
    duckdb_path: Path, todo: Sequence[_Scanned], batch_id: str, progress: Progress | None
) -> dict[str, FileManifest]:
    """Parse and load into the DuckDB file: ONE transaction for the whole batch."""
    loaded: dict[str, FileManifest] = {}
    duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(duckdb_path))
    try:
        _ensure_tables(con)
        parsed = []
        for number, item in enumerate(todo, start=1):
            if progress:
                progress(f"parsing {item.path.name}", number - 1, len(todo))
            parsed.append(_parse_file(con, item))
        con.execute("BEGIN TRANSACTION")
        try:
            for result in parsed:
                loaded[result.item.spec.table] = _write_file(con, result, batch_id)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.close()
    return loaded


# --------------------------------------------------------------------------------------
# PostgreSQL warehouse
# --------------------------------------------------------------------------------------

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
_RAW_META = ("_line_number", "_batch_id", "_file_sha256", "_ingested_at")
_QUARANTINE_COLUMNS = {
    "batch_id": "VARCHAR",
    "file_name": "VARCHAR",
    "file_sha256": "VARCHAR",
    "line_number": "BIGINT",
    "reason": "VARCHAR",
    "detail": "VARCHAR",
    "original_line": "BLOB",
    "quarantined_at": "TIMESTAMP WITH TIME ZONE",
}


def _pg_type(sql_type: str) -> str:
    return _PG_TYPES.get(sql_type, sql_type)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def pg_table_ddl() -> list[str]:
    """The PostgreSQL statements creating ``raw.*`` and ``quarantine.*`` (idempotent)."""
    statements = ["CREATE SCHEMA IF NOT EXISTS raw", "CREATE SCHEMA IF NOT EXISTS quarantine"]
    quarantine_cols = ", ".join(f"{n} {_pg_type(t)}" for n, t in _QUARANTINE_COLUMNS.items())
    for spec in SPECS:
        cols = ", ".join(f'"{name}" {_pg_type(t)}' for name, t in spec.columns.items())
        statements += [
            f"CREATE TABLE IF NOT EXISTS raw.{spec.table} ({cols}, _line_number BIGINT, "
            "_batch_id VARCHAR, _file_sha256 VARCHAR, _ingested_at timestamptz)",
            # Re-ingesting replaces a file's rows by its hash, and the gates read a batch by it.
            f"CREATE INDEX IF NOT EXISTS {spec.table}_file_sha256_idx "
            f"ON raw.{spec.table} (_file_sha256)",
            f"CREATE TABLE IF NOT EXISTS quarantine.{spec.table} ({quarantine_cols})",
        ]
    return statements


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


def _split_nul_rows(con: duckdb.DuckDBPyConnection, parsed: _Parsed) -> tuple[_Parsed, str]:
    """Quarantine accepted rows with a NUL in a text field; return them and the numbered rows.

    Registers ``_lines`` (row -> source line) first: the row numbers are those DuckDB
    gave while parsing, before anything moved to quarantine here.
    """
    item = parsed.item
    con.register(
        "_lines",
        pa.table(
            {"_idx": np.arange(parsed.accepted), "_line_number": _accepted_line_numbers(parsed)}
        ),
    )
    numbered = (
        f"(SELECT t.*, l._line_number FROM (SELECT *, rowid AS _idx FROM {parsed.temp_table}) "
        "AS t JOIN _lines AS l USING (_idx))"
    )
    texts = [name for name, sql_type in item.spec.columns.items() if sql_type == "VARCHAR"]
    if not texts:
        return parsed, numbered
    flags = ", ".join(f'coalesce(contains("{name}", chr(0)), false)' for name in texts)
    found = con.execute(
        f"SELECT _line_number, [{flags}] AS flags FROM {numbered} "
        f"WHERE list_bool_or([{flags}]) ORDER BY _line_number"
    ).fetchall()
    if not found:
        return parsed, numbered
    extra = [
        (
            int(line),
            NUL_CHARACTER,
            "NUL character in "
            + ", ".join(name for name, flag in zip(texts, flags_, strict=True) if flag)
            + ": PostgreSQL text cannot store it",
        )
        for line, flags_ in found
    ]
    con.register("_nul_lines", pa.table({"_line_number": [line for line, _, _ in extra]}))
    filtered = f"(SELECT * FROM {numbered} ANTI JOIN _nul_lines USING (_line_number))"
    updated = _Parsed(
        item, parsed.temp_table, parsed.accepted - len(extra), sorted(parsed.quarantined + extra)
    )
    return updated, filtered


def _pg_write_file(
    con: duckdb.DuckDBPyConnection,
    cur: Any,
    parsed: _Parsed,
    batch_id: str,
    ingested_at: str,
    workdir: Path,
) -> FileManifest:
    """Replace this file's rows in PostgreSQL (inside the batch transaction) with COPY."""
    spec, item = parsed.item.spec, parsed.item
    parsed, rows_sql = _split_nul_rows(con, parsed)
    _register_quarantined(con, parsed)
    cols = ", ".join(f'"{name}"' for name in spec.columns)
    raw_csv, quarantine_csv = workdir / f"raw_{spec.table}.csv", workdir / f"q_{spec.table}.csv"
    stamp = _sql_str(ingested_at)
    con.execute(
        f"COPY (SELECT {cols}, _line_number, {_sql_str(batch_id)}, {_sql_str(item.sha256)}, "
        f"{stamp} FROM {rows_sql} ORDER BY _line_number) "
        f"TO {_sql_str(str(raw_csv))} (FORMAT csv, HEADER false)"
    )
    con.execute(
        f"COPY (SELECT {_sql_str(batch_id)}, {_sql_str(item.path.name)}, {_sql_str(item.sha256)}, "
        "line_number, reason, replace(detail, chr(0), '\\0'), '\\x' || hex(original_line), "
        f"{stamp} FROM _quarantined ORDER BY line_number) "
        f"TO {_sql_str(str(quarantine_csv))} (FORMAT csv, HEADER false)"
    )
    for view in ("_lines", "_quarantined", "_nul_lines"):
        con.unregister(view)
    con.execute(f"DROP TABLE {parsed.temp_table}")

    cur.execute(f"DELETE FROM raw.{spec.table} WHERE _file_sha256 = %s", [item.sha256])
    cur.execute(f"DELETE FROM quarantine.{spec.table} WHERE file_sha256 = %s", [item.sha256])
    targets = (
        (f"raw.{spec.table} ({cols}, {', '.join(_RAW_META)})", raw_csv, parsed.accepted),
        (
            f"quarantine.{spec.table} ({', '.join(_QUARANTINE_COLUMNS)})",
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
    url: str, todo: Sequence[_Scanned], batch_id: str, progress: Progress | None
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
                parsed.append(_parse_file(con, item))
            # An unreachable warehouse is a transient error (Airflow retries), not a refusal.
            pg = pg_connect(url)
            try:
                with pg.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", [PG_INGEST_LOCK])
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
                            con, cur, result, batch_id, ingested_at, workdir
                        )
                pg.commit()
            except BaseException:
                pg.rollback()
                raise
            finally:
                pg.close()
        finally:
            con.close()
    return loaded


def _warehouse_kind(warehouse: Path | str) -> tuple[str, Path | str]:
    if isinstance(warehouse, Path):
        return "duckdb", warehouse
    if warehouse.startswith("duckdb:///"):
        return "duckdb", Path(warehouse.removeprefix("duckdb:///"))
    scheme = warehouse.split("://", 1)[0] if "://" in warehouse else ""
    if not scheme:
        return "duckdb", Path(warehouse)
    if scheme in ("postgresql", "postgresql+psycopg2"):
        return "postgresql", warehouse
    raise ValueError(
        f"unsupported warehouse {warehouse!r}: expected a DuckDB file, duckdb:///PATH "
        "or postgresql[+psycopg2]://..."
    )


def ingest(
    source: Path,
    warehouse: Path | str,
    ledger: Ledger,
    *,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> IngestManifest:
    """Load the WANDS-layout files in ``source`` into the warehouse and record the batch.

    ``warehouse`` is the DuckDB file (a :class:`~pathlib.Path`) or a warehouse URL, as
    in ``SHELFGUARD_WAREHOUSE_URL``: ``duckdb:///PATH`` or ``postgresql[+psycopg2]://...``
    (pass ``settings.warehouse_url``). Raises :class:`IngestError` on a file-level
    problem; nothing is written then.
    """
    kind, target = _warehouse_kind(warehouse)
    source = source.resolve()
    items = discover(source)
    for number, item in enumerate(items, start=1):
        if progress:
            progress(f"hashing {item.path.name}", number - 1, len(items))
        _scan(item)
    batch_id = batch_id_for(items)
    known = {
        item.spec.table: ledger.find_ingested_file(f"raw.{item.spec.table}", item.sha256)
        for item in items
    }
    todo = [item for item in items if known[item.spec.table] is None]

    loaded: dict[str, FileManifest] = {}
    if todo and kind == "postgresql":
        loaded = _load_postgres(str(target), todo, batch_id, progress)
    elif todo:
        loaded = _load_duckdb(Path(target), todo, batch_id, progress)
    # The warehouse has committed: only now does the ledger learn of the batch.
    if progress:
        progress("recording manifest", len(items), len(items))

    files = []
    for item in items:
        record = known[item.spec.table]
        if record is not None:
            files.append(_from_record(record))
            continue
        manifest = loaded[item.spec.table]
        ledger.record_ingested_file(
            IngestFileRecord(
                id=None,
                run_id=run_id,
                batch_id=batch_id,
                file_name=manifest.file_name,
                table_name=manifest.table,
                sha256=manifest.sha256,
                bytes=manifest.bytes,
                rows_read=manifest.rows_read,
                rows_accepted=manifest.rows_accepted,
                rows_quarantined=manifest.rows_quarantined,
                quarantine_by_reason=manifest.quarantine_by_reason,
                extra_columns=manifest.extra_columns,
                ingested_at=None,
            )
        )
        files.append(manifest)
    return IngestManifest(batch_id=batch_id, source=str(source), files=files)
