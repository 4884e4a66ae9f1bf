"""Ingestion: raw files -> ``raw.*`` tables, bad rows -> ``quarantine.*``, manifest -> ledger.

The files follow the WANDS layout (tab-separated, a header line, no quoting).
DuckDB parses and casts them in bulk; Python touches only the rejected lines,
to copy their original bytes into quarantine. Guarantees:

- rows read = rows accepted + rows quarantined, for every file, or the load is
  rolled back (invariant 4: no row is lost silently);
- a line never refuses a file: any data line that cannot be loaded goes to
  quarantine with a reason code and its original bytes, and the batch goes on;
- a file-level problem (a folder with none of the known files, missing required
  column, unreadable or empty file, a bad header line, a ``product.csv`` with a header
  and no data line) stops the whole batch before anything is written;
- the same file content is loaded into the same table once: re-ingesting is a
  no-op (invariant 7).

Lines are split on LF (``\\n``); a CR (``\\r``) directly before the LF, or at the very
end of the file, is part of the line terminator, so CRLF, LF and a mix of both load
alike. A file's lines are numbered from 1, the header being line 1: that is the
``_line_number`` of an accepted row and the ``line_number`` of a quarantined one, whose
``original_line`` holds the line's bytes without its terminator.

Two paths, one result. The fast path hands the file to DuckDB's strict CSV parser. It is
taken when the hashing pass (:func:`_scan`, vectorised with numpy) finds none of what
that parser refuses whole files for or would accept silently: a NUL or other C0 control
byte besides TAB, LF and CR; a CR that does not end a line; CRLF and LF line endings in
one file; a line longer than :data:`MAX_LINE_BYTES` (1 MiB; DuckDB skips lines over its
own 2 MB limit without a word). Otherwise, or when DuckDB raises or its counts do not add
up (rows, or TABs: DuckDB drops empty fields past the header's without a reject), the
slow path checks the lines in Python (numpy picks out the few that need it: non-ASCII,
a control byte, the wrong TAB count, empty or too long), quarantines the bad ones, copies
the others (LF-terminated, header first) to a scratch file for DuckDB, and maps its row
numbers back to the original lines. Either way DuckDB only casts; the reason for a line
it rejects is the line checks' when they find one. Reason codes (the first that
applies, in this order):

``line_too_long``
    the line (without terminator) is over :data:`MAX_LINE_BYTES` bytes;
``blank_line``
    an empty line;
``nul_character`` / ``control_character``
    a NUL byte / another C0 control character than TAB (PostgreSQL text cannot hold a
    NUL; the rule is the same on both warehouses);
``stray_carriage_return``
    a CR inside the line rather than as its terminator;
``invalid_utf8``
    bytes that are not UTF-8;
``too_few_fields`` / ``too_many_fields``
    the TAB count does not match the header's (empty extra fields included);
``unparseable_value``
    a number or timestamp column holds text that does not parse (DuckDB's cast);
``malformed_line``
    anything else DuckDB's strict parser rejects.

Personal data is pseudonymised as it lands: ``search_log.csv``'s ``user_id`` is stored
as ``user_key``, its HMAC-SHA256 under the pseudonymisation key
(:mod:`shelfguard.pseudonyms`), computed in this process, and neither ``user_id`` nor
``user_email`` is stored in ``raw.*``. A ``raw.search_log`` an older release filled with
them is rebuilt without them by the next ingest. Quarantine keeps a rejected line's
original bytes, personal fields included: :func:`purge_expired_quarantine` deletes them
once the policy's retention has passed, and on PostgreSQL ``PUBLIC`` may not read them.

The warehouse is the DuckDB file of the embedded default or a PostgreSQL database
(``SHELFGUARD_WAREHOUSE_URL``). On PostgreSQL the parsing and the quarantine decisions
are the same DuckDB code, run in an in-memory database; the accepted and quarantined
rows of every file of the batch are then bulk-loaded with ``COPY ... FROM STDIN`` in
ONE PostgreSQL transaction, under a transaction-level advisory lock so that two
ingests into the same warehouse run one after the other. The tables and their column
names and types are the DuckDB ones (``BIGINT``, ``VARCHAR``, ``double precision``,
``timestamp``, ``bytea`` for the original bytes).

The ledger is another database, so the batch cannot commit in both at once. The order
is the same on both warehouses: the warehouse transaction commits first, the manifest
is recorded in the ledger after it. A crash in between leaves rows the ledger does not
know of, never a ledger entry without its rows; the next ingest of the same files then
loads them again, replacing the rows of the same file content (matched on
``_file_sha256``), so nothing is duplicated.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import duckdb
import numpy as np
import pyarrow as pa

from shelfguard import duckdb_wait
from shelfguard.config import load_settings
from shelfguard.failpoints import failpoint
from shelfguard.ledger import IngestFileRecord, Ledger, RetentionPurgeRecord
from shelfguard.pseudonyms import load_key, pseudonym

Progress = Callable[[str, int, int], None]

_CHUNK = 16 * 1024 * 1024
#: The longest data line loaded, in bytes without its terminator; a longer one is
#: quarantined (``line_too_long``). Below DuckDB's own limit (2,000,000 bytes), over which
#: it drops a line without a reject.
MAX_LINE_BYTES = 1024 * 1024


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
    #: Personal columns: read and checked like the others, never stored in ``raw.*``.
    personal: tuple[str, ...] = ()
    #: (stored column, personal column): the stored column holds the personal one's
    #: pseudonym (:func:`shelfguard.pseudonyms.pseudonym`), in its place.
    pseudonyms: tuple[tuple[str, str], ...] = ()
    #: A file with a header and no data line is refused (a catalog of zero products).
    not_empty: bool = False

    @property
    def stored_columns(self) -> dict[str, str]:
        """The data columns of ``raw.<table>``: the file's, pseudonyms in place of personal ones."""
        replaced = {source: stored for stored, source in self.pseudonyms}
        stored: dict[str, str] = {}
        for name, sql_type in self.columns.items():
            if name in replaced:
                stored[replaced[name]] = "VARCHAR"
            elif name not in self.personal:
                stored[name] = sql_type
        return stored


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
    # Not required: a delivery of behaviour alone (the search service's served log) reads
    # the catalog of the published marts. A folder with none of these files is refused.
    FileSpec(
        "product", "product.csv", "products", _PRODUCT_COLUMNS, required=False, not_empty=True
    ),
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
        personal=("user_id", "user_email"),
        pseudonyms=(("user_key", "user_id"),),
    ),
    FileSpec(
        "catalog_changes",
        "catalog_changes.csv",
        "catalog_changes",
        {"change_id": "BIGINT", "changed_at": "TIMESTAMP", "op": "VARCHAR", **_PRODUCT_COLUMNS},
        required=False,
    ),
)

BLANK_LINE = "blank_line"
LINE_TOO_LONG = "line_too_long"
#: PostgreSQL text cannot store U+0000; the rule is the same on both warehouses.
NUL_CHARACTER = "nul_character"
CONTROL_CHARACTER = "control_character"
STRAY_CARRIAGE_RETURN = "stray_carriage_return"
INVALID_UTF8 = "invalid_utf8"
TOO_FEW_FIELDS = "too_few_fields"
TOO_MANY_FIELDS = "too_many_fields"
UNPARSEABLE_VALUE = "unparseable_value"
MALFORMED_LINE = "malformed_line"

# DuckDB's reject error types -> the reason codes governance owners read. A line can have
# several (a tab inside a number: TOO MANY COLUMNS and CAST); the first in this order wins.
_REASONS = {
    "LINE SIZE OVER MAXIMUM": LINE_TOO_LONG,
    "INVALID ENCODING": INVALID_UTF8,
    "INVALID UNICODE": INVALID_UTF8,
    "MISSING COLUMNS": TOO_FEW_FIELDS,
    "TOO MANY COLUMNS": TOO_MANY_FIELDS,
    "UNQUOTED VALUE": MALFORMED_LINE,
    "INVALID STATE": MALFORMED_LINE,
    "CAST": UNPARSEABLE_VALUE,
}
_REASON_ORDER = {error_type: rank for rank, error_type in enumerate(_REASONS)}
#: Any C0 control byte but TAB and LF (which never is inside a line): NUL, CR and others.
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f]")
_OTHER_CONTROL_BYTE = re.compile(rb"[\x01-\x08\x0a-\x0c\x0e-\x1f]")  # neither NUL nor CR


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
    #: What the scan found that DuckDB's strict parser cannot be trusted with (empty: none).
    hazards: list[str] = field(default_factory=list)
    tabs: int = 0  # in the whole file

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


def _strip_terminator(raw: bytes) -> bytes:
    """A line read from the file without its LF, CRLF or (last line) CR terminator."""
    if raw.endswith(b"\n"):
        raw = raw[:-1]
    return raw[:-1] if raw.endswith(b"\r") else raw


def _read_header(spec: FileSpec, path: Path) -> list[str]:
    try:
        with path.open("rb") as handle:
            first = handle.readline(MAX_LINE_BYTES + 2)
    except OSError as exc:
        raise IngestError(f"{path.name}: cannot read the file: {exc.strerror or exc}") from exc
    if not first.strip():
        raise IngestError(f"{path.name}: the file is empty (no header line)")
    if len(first) == MAX_LINE_BYTES + 2 and not first.endswith(b"\n"):
        raise IngestError(f"{path.name}: line 1 (header) is over {MAX_LINE_BYTES:,} bytes")
    line = _strip_terminator(first)
    control = _CONTROL_BYTE.search(line)
    if control:
        raise IngestError(
            f"{path.name}: line 1 (header) has a control character "
            f"(byte 0x{line[control.start()]:02X} at byte {control.start() + 1})"
        )
    try:
        header = line.decode("utf-8").split("\t")
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


class _Scanner:
    """The per-chunk work of :func:`_scan`: newlines, TABs, odd bytes."""

    def __init__(self) -> None:
        self.newlines: list[np.ndarray] = []
        self.odd_at: list[np.ndarray] = []  # offsets of C0 bytes other than TAB and LF
        self.odd_byte: list[np.ndarray] = []
        self.tabs = 0

    def feed(self, chunk: bytes, offset: int) -> None:
        data = np.frombuffer(chunk, dtype=np.uint8)
        found = np.flatnonzero(data == 0x0A)
        self.newlines.append(found.astype(np.int64) + offset)
        tabs = int(np.count_nonzero(data == 0x09))
        self.tabs += tabs
        # The common case costs one more count: below 0x20, only TABs and LFs.
        if np.count_nonzero(data < 0x20) != tabs + len(found):
            odd = np.flatnonzero((data < 0x20) & (data != 0x09) & (data != 0x0A))
            self.odd_at.append(odd.astype(np.int64) + offset)
            self.odd_byte.append(data[odd])


def _scan(item: _Scanned) -> None:
    """Hash the file, find every line's byte span and its hazards, in vectorised chunks.

    The hazards are what sends the file down the slow path (see the module docstring).
    """
    digest = hashlib.sha256()
    scanner = _Scanner()
    offset = 0
    with item.path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            scanner.feed(chunk, offset)
            offset += len(chunk)
    lf = np.concatenate(scanner.newlines) if scanner.newlines else np.zeros(0, np.int64)
    ends = lf
    if offset and (len(ends) == 0 or ends[-1] != offset - 1):
        ends = np.append(ends, offset)  # last line has no terminator
    item.sha256 = digest.hexdigest()
    item.size = offset
    item.line_ends = ends
    item.line_starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    item.tabs = scanner.tabs
    item.hazards = _hazards(item, lf, scanner)


def _hazards(item: _Scanned, lf: np.ndarray, scanner: _Scanner) -> list[str]:
    hazards = []
    if scanner.odd_at:
        at, byte = np.concatenate(scanner.odd_at), np.concatenate(scanner.odd_byte)
        if np.any(byte != 0x0D):
            hazards.append("NUL or control characters")
        cr = at[byte == 0x0D]
        # A CR is a terminator when an LF follows it, or when it is the file's last byte.
        slot = np.minimum(np.searchsorted(lf, cr + 1), max(len(lf) - 1, 0))
        crlf = (lf[slot] == cr + 1) if len(lf) else np.zeros(len(cr), np.bool_)
        if not np.all(crlf | (cr == item.size - 1)):
            hazards.append("carriage returns inside lines")
        if 0 < np.count_nonzero(crlf) < len(lf):
            hazards.append("mixed CRLF and LF line endings")
    lengths = item.line_ends - item.line_starts
    if len(lengths) and int(lengths.max()) > MAX_LINE_BYTES:
        hazards.append(f"lines over {MAX_LINE_BYTES:,} bytes")
    return hazards


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path``, its symbolic links followed, stays inside ``folder``."""
    try:
        path.resolve(strict=True).relative_to(folder.resolve(strict=True))
    except (OSError, ValueError, RuntimeError):
        return False
    return True


def discover(source: Path) -> list[_Scanned]:
    """Find the known files in ``source`` and check their headers, loading nothing.

    A symbolic link is followed only when it resolves inside ``source``; one that points
    outside it (or nowhere) refuses the batch without quoting anything of its target.
    """
    if not source.is_dir():
        raise IngestError(f"{source}: not a folder")
    found = []
    for spec in SPECS:
        path = source / spec.file_name
        if path.is_symlink() and not _inside(path, source):
            # Nothing of the target is quoted: not its path, not its first line.
            raise IngestError(
                f"{spec.file_name}: a symbolic link to a file outside the source folder "
                "(or to nothing); refused: copy the file into the folder instead"
            )
        if not path.exists():
            if spec.required:
                raise IngestError(f"{source}: required file {spec.file_name} is missing")
            continue
        if not path.is_file():
            raise IngestError(f"{path}: not a regular file")
        found.append(_Scanned(spec, path, _read_header(spec, path)))
    if not found:
        known = ", ".join(spec.file_name for spec in SPECS)
        raise IngestError(f"{source}: none of the files a batch is made of is here ({known})")
    return found


def _check_has_rows(item: _Scanned) -> None:
    """The catalog with a header and no data line is a contract failure."""
    if item.spec.not_empty and item.data_lines == 0:
        raise IngestError(
            f"{item.path.name}: the file has a header line and no data lines; a "
            f"{item.path.name} with zero rows is refused (it would load an empty "
            f"raw.{item.spec.table})"
        )


def _ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE SCHEMA IF NOT EXISTS raw")
    con.execute("CREATE SCHEMA IF NOT EXISTS quarantine")
    for spec in SPECS:
        cols = ", ".join(f'"{name}" {sql_type}' for name, sql_type in spec.stored_columns.items())
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


# --------------------------------------------------------------------------------------
# Pseudonyms: personal columns are replaced by keyed hashes before anything is stored
# --------------------------------------------------------------------------------------

KeySource = Callable[[], bytes]
_RAW_META_SQL = "t._line_number, t._batch_id, t._file_sha256, t._ingested_at"


def _pseudonym_relation(stored: str) -> str:
    return f"_pseudonyms_{stored}"


def _pseudonym_table(values: Sequence[str], key: bytes) -> pa.Table:
    """``value -> pseudonym`` for every distinct value: the key stays in this process."""
    return pa.table(
        {
            "value": pa.array(values, pa.string()),
            "pseudonym": pa.array([pseudonym(key, value) for value in values], pa.string()),
        }
    )


def _stored_select(spec: FileSpec) -> tuple[str, str]:
    """The stored columns as a select list over the rows aliased ``t``, and the joins
    it needs: each pseudonym is looked up in its ``value -> pseudonym`` relation."""
    replaced = {source: stored for stored, source in spec.pseudonyms}
    select, joins = [], []
    for name in spec.columns:
        if name in replaced:
            relation = _pseudonym_relation(replaced[name])
            select.append(f'{relation}.pseudonym AS "{replaced[name]}"')
            joins.append(f'LEFT JOIN {relation} ON {relation}.value = t."{name}"')
        elif name not in spec.personal:
            select.append(f't."{name}"')
    return ", ".join(select), " ".join(joins)


def _register_pseudonyms(
    con: duckdb.DuckDBPyConnection, spec: FileSpec, relation: str, key: KeySource
) -> None:
    """Register the ``value -> pseudonym`` relations :func:`_stored_select` joins, for the
    values of ``relation`` (a table or a parenthesised query)."""
    for stored, source in spec.pseudonyms:
        values = con.execute(
            f'SELECT DISTINCT "{source}" FROM {relation} AS t WHERE "{source}" IS NOT NULL'
        ).fetchall()
        con.register(_pseudonym_relation(stored), _pseudonym_table([v for (v,) in values], key()))


def _unregister_pseudonyms(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    for stored, _ in spec.pseudonyms:
        con.unregister(_pseudonym_relation(stored))


def _clear_columns(spec: FileSpec, existing: Sequence[str]) -> list[str]:
    return [name for name in spec.personal if name in existing]


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


def _read_csv_sql(item: _Scanned, path: Path, rejects: str) -> str:
    # Columns are declared in the file's own order; extra ones are read as text and not
    # kept, under made-up names (the header's could be anything, quotes included).
    columns = [
        (name, item.spec.columns[name]) if name in item.spec.columns else (f"_extra_{i}", "VARCHAR")
        for i, name in enumerate(item.header)
    ]
    columns_sql = "{" + ", ".join(f"'{n}': '{t}'" for n, t in columns) + "}"
    return (
        f"read_csv({_sql_str(str(path))}, delim='\\t', quote='', escape='', header=true, "
        f"auto_detect=false, strict_mode=true, columns={columns_sql}, "
        f"store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan', "
        "timestampformat='%Y-%m-%dT%H:%M:%SZ')"
    )


def _field_name(body: bytes, position: int, header: Sequence[str]) -> str:
    index = body.count(b"\t", 0, position)
    return header[index] if index < len(header) else f"field {index + 1}"


def _line_problem(body: bytes, header: Sequence[str]) -> tuple[str, str] | None:
    """(reason, detail) when a data line (without terminator) cannot be loaded, else None.

    Checks what does not need the column types; the casts are DuckDB's.
    """
    if len(body) > MAX_LINE_BYTES:
        return LINE_TOO_LONG, f"{len(body):,} bytes; the limit is {MAX_LINE_BYTES:,}"
    if not body:
        return BLANK_LINE, "empty line"
    control = _CONTROL_BYTE.search(body)
    if control:
        nul = body.find(b"\0")
        if nul >= 0:
            return NUL_CHARACTER, f"NUL character in {_field_name(body, nul, header)}"
        other = _OTHER_CONTROL_BYTE.search(body, control.start())
        if other:
            at = other.start()
            where = _field_name(body, at, header)
            return CONTROL_CHARACTER, f"control character 0x{body[at]:02X} in {where}"
        at = body.find(b"\r")
        return STRAY_CARRIAGE_RETURN, f"carriage return inside {_field_name(body, at, header)}"
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = _field_name(body, exc.start, header)
            return INVALID_UTF8, f"bytes that are not UTF-8 at byte {exc.start + 1}, in {where}"
    fields = body.count(b"\t") + 1
    if fields != len(header):
        reason = TOO_FEW_FIELDS if fields < len(header) else TOO_MANY_FIELDS
        return reason, f"{fields} fields; the header has {len(header)}"
    return None


def _duckdb_rejects(con: duckdb.DuckDBPyConnection, rejects: str) -> list[tuple[int, str, str]]:
    """(line, reason, detail) for every line DuckDB rejected, numbered in the file it read."""
    rejected = con.execute(
        f"SELECT line, list(DISTINCT error_type::VARCHAR), "
        f"string_agg(DISTINCT coalesce(column_name, '') || ': ' || error_message, ' | ') "
        f"FROM {rejects} GROUP BY line ORDER BY line"
    ).fetchall()
    return [
        (
            int(line),
            _REASONS.get(min(types, key=lambda t: _REASON_ORDER.get(t, 99)), MALFORMED_LINE),
            str(detail)[:1000],
        )
        for line, types, detail in rejected
    ]


def _explained(
    body: bytes, header: Sequence[str], line: int, reason: str, detail: str
) -> tuple[int, str, str]:
    """A line DuckDB rejected, with the reason the line checks give when they find one.

    DuckDB names the symptom (a ragged line's last field fails its cast); the line
    checks name the cause, the same on both paths.
    """
    problem = _line_problem(body, header)
    return (line, *problem) if problem else (line, reason, detail)


@dataclass
class _Parsed:
    item: _Scanned
    temp_table: str
    accepted: int
    quarantined: list[tuple[int, str, str]]


def _read_into(
    con: duckdb.DuckDBPyConnection, item: _Scanned, path: Path, temp_table: str, rejects: str
) -> int:
    """Parse ``path`` (the file or its cleaned copy) into ``temp_table``; its row count."""
    con.execute(f"DROP TABLE IF EXISTS {rejects}")
    con.execute(f"DROP TABLE IF EXISTS {rejects}_scan")
    # Outside any transaction on purpose: committed temp rows get rowids 0..n-1 in file
    # order, which is how accepted rows are matched with their line numbers.
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {temp_table} AS "
        f"SELECT * FROM {_read_csv_sql(item, path, rejects)}"
    )
    return int(con.execute(f"SELECT count(*) FROM {temp_table}").fetchall()[0][0])


def _parse_fast(con: duckdb.DuckDBPyConnection, item: _Scanned) -> _Parsed | None:
    """DuckDB reads the file itself; None when it refuses it or its counts do not add up."""
    rejects, temp_table = f"rejects_{item.spec.table}", f"_load_{item.spec.table}"
    try:
        accepted = _read_into(con, item, item.path, temp_table, rejects)
    except duckdb.Error:
        return None
    quarantined = []
    tabs = (len(item.header) - 1) * (1 + accepted)  # the header's and each accepted row's
    with item.path.open("rb") as handle:
        for rejected in _duckdb_rejects(con, rejects):
            body = item.line_bytes(handle, rejected[0])
            tabs += body.count(b"\t")
            quarantined.append(_explained(body, item.header, *rejected))
        # DuckDB skips blank lines without a word; they are rows read, so they are quarantined.
        lengths = item.line_ends - item.line_starts
        candidates = np.flatnonzero(lengths[1:] <= 1) + 2  # 1-based; a lone "\r" is blank too
        rejected_lines = {line for line, _, _ in quarantined}
        for line in candidates.tolist():
            if line not in rejected_lines and not item.line_bytes(handle, line):
                quarantined.append((line, BLANK_LINE, "empty line"))
    if accepted + len(quarantined) != item.data_lines:
        return None
    # DuckDB drops empty fields past the header's without a word: a row it accepted from a
    # line with more TABs than the header shows as TABs the rows do not account for. (A
    # row it accepted has at least the header's TABs: fewer is a reject.)
    if tabs != item.tabs:
        return None
    return _Parsed(item, temp_table, accepted, sorted(quarantined))


def _line_flags(item: _Scanned) -> tuple[np.ndarray, np.ndarray]:
    """Per line (index 0: the header): does it need the line checks; does a CR end it.

    A line that is ASCII, has no control byte but its terminator, is not empty nor over
    the limit, and has the header's tab count would pass :func:`_line_problem`: only the
    others are checked one by one, in Python.
    """
    starts, ends = item.line_starts, item.line_ends
    tabs = np.zeros(len(starts), np.int64)
    suspect = np.zeros(len(starts), np.bool_)
    cr_end = np.zeros(len(starts), np.bool_)
    offset = 0
    with item.path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            data = np.frombuffer(chunk, dtype=np.uint8)
            at = np.flatnonzero(data == 0x09).astype(np.int64) + offset
            if len(at):
                line = np.searchsorted(starts, at, side="right") - 1
                counts = np.bincount(line - line[0])
                tabs[line[0] : line[0] + len(counts)] += counts
            odd = np.flatnonzero((data >= 0x80) | ((data < 0x20) & (data != 0x09) & (data != 0x0A)))
            if len(odd):
                at = odd.astype(np.int64) + offset
                line = np.searchsorted(starts, at, side="right") - 1
                terminator = (data[odd] == 0x0D) & (at + 1 == ends[line])
                cr_end[line[terminator]] = True
                suspect[line[~terminator]] = True
            offset += len(chunk)
    length = ends - starts - cr_end
    suspect |= (length == 0) | (length > MAX_LINE_BYTES) | (tabs != len(item.header) - 1)
    return suspect, cr_end


def _clean_copy(item: _Scanned, target: Path) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Write the header and the loadable lines to ``target``, LF-terminated, in file order.

    Returns the original line number of each data line written, and the lines set aside.
    Loadable lines are copied in blocks of up to about :data:`_CHUNK` bytes, their CR
    terminators dropped.
    """
    starts, ends = item.line_starts, item.line_ends
    suspect, cr_end = _line_flags(item)
    keep = ~suspect
    keep[0] = False  # the header is written from the parsed names
    quarantined: list[tuple[int, str, str]] = []
    with item.path.open("rb") as handle:
        for index in np.flatnonzero(suspect[1:]) + 1:
            length = int(ends[index] - starts[index] - cr_end[index])
            problem = (
                (LINE_TOO_LONG, f"{length:,} bytes; the limit is {MAX_LINE_BYTES:,}")
                if length > MAX_LINE_BYTES
                else _line_problem(item.line_bytes(handle, int(index) + 1), item.header)
            )
            if problem:
                quarantined.append((int(index) + 1, *problem))
            else:
                keep[index] = True
    kept = np.flatnonzero(keep)
    with item.path.open("rb") as handle, target.open("wb") as out:
        out.write(("\t".join(item.header) + "\n").encode())
        if len(kept):
            cut = np.flatnonzero((np.diff(kept) != 1) | (np.diff(starts[kept] // _CHUNK) != 0)) + 1
            for first, last in zip(
                kept[np.r_[0, cut]].tolist(),
                kept[np.r_[cut - 1, len(kept) - 1]].tolist(),
                strict=True,
            ):
                handle.seek(int(starts[first]))
                block = handle.read(int(ends[last] - starts[first]))  # up to the last LF
                crs = ends[first : last + 1][cr_end[first : last + 1]] - 1 - starts[first]
                if len(crs):
                    block = np.delete(np.frombuffer(block, dtype=np.uint8), crs).tobytes()
                out.write(block + b"\n")
    return kept + 1, quarantined


def _parse_slow(con: duckdb.DuckDBPyConnection, item: _Scanned, scratch: Path) -> _Parsed:
    """Check every line in Python, then let DuckDB read a cleaned copy of the rest."""
    rejects, temp_table = f"rejects_{item.spec.table}", f"_load_{item.spec.table}"
    with tempfile.TemporaryDirectory(prefix="shelfguard-lines-", dir=scratch) as tmp:
        cleaned = Path(tmp) / item.path.name
        kept, quarantined = _clean_copy(item, cleaned)
        try:
            accepted = _read_into(con, item, cleaned, temp_table, rejects)
        except duckdb.Error as exc:
            raise IngestError(
                f"{item.path.name}: DuckDB could not parse the file, even with its "
                f"{len(quarantined)} unloadable line(s) set aside: {exc}"
            ) from exc
    with item.path.open("rb") as handle:
        # Line k of the cleaned copy (1: the header) is original line kept[k - 2].
        for line, reason, detail in _duckdb_rejects(con, rejects):
            original = int(kept[line - 2])
            body = item.line_bytes(handle, original)
            quarantined.append(_explained(body, item.header, original, reason, detail))
    if accepted + len(quarantined) != item.data_lines:
        raise IngestError(
            f"{item.path.name}: {item.data_lines} rows read but {accepted} accepted + "
            f"{len(quarantined)} quarantined; refusing to lose rows silently"
        )
    return _Parsed(item, temp_table, accepted, sorted(quarantined))


def _parse_file(con: duckdb.DuckDBPyConnection, item: _Scanned, scratch: Path) -> _Parsed:
    """Parse one file into a temporary table; count and list the lines it quarantines.

    The fast path when the scan found no hazard, the slow path (a scratch copy of the
    loadable lines, in a folder made under ``scratch``) when it did or DuckDB balked.
    """
    parsed = None if item.hazards else _parse_fast(con, item)
    return parsed if parsed is not None else _parse_slow(con, item, scratch)


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


def _write_file(
    con: duckdb.DuckDBPyConnection, parsed: _Parsed, batch_id: str, key: KeySource
) -> FileManifest:
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
    _register_pseudonyms(con, spec, parsed.temp_table, key)
    con.execute(f"DELETE FROM raw.{spec.table} WHERE _file_sha256 = ?", [item.sha256])
    con.execute(f"DELETE FROM quarantine.{spec.table} WHERE file_sha256 = ?", [item.sha256])
    cols = ", ".join(f'"{name}"' for name in spec.stored_columns)
    select, joins = _stored_select(spec)
    con.execute(
        f"INSERT INTO raw.{spec.table} ({cols}, _line_number, _batch_id, _file_sha256, _ingested_at) "
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
        cols = ", ".join(f'"{name}" {_pg_type(t)}' for name, t in spec.stored_columns.items())
        statements += [
            f"CREATE TABLE IF NOT EXISTS raw.{spec.table} ({cols}, _line_number BIGINT, "
            "_batch_id VARCHAR, _file_sha256 VARCHAR, _ingested_at timestamptz)",
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
    con.register(
        "_lines",
        pa.table(
            {"_idx": np.arange(parsed.accepted), "_line_number": _accepted_line_numbers(parsed)}
        ),
    )
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
            pg = pg_connect(url)
            try:
                with pg.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", [PG_INGEST_LOCK])
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
                pg.commit()
            except BaseException:
                if not pg.closed:  # a server that went away took the transaction with it
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


def _key_source(kind: str, pseudonym_key: bytes | None) -> KeySource:
    """The key, read from its secret store the first time a personal column needs it."""
    if pseudonym_key is not None:
        return lambda: pseudonym_key

    @functools.cache
    def key() -> bytes:
        return load_key(kind, load_settings().home)

    return key


def ingest(
    source: Path,
    warehouse: Path | str,
    ledger: Ledger,
    *,
    run_id: str | None = None,
    progress: Progress | None = None,
    pseudonym_key: bytes | None = None,
) -> IngestManifest:
    """Load the WANDS-layout files in ``source`` into the warehouse and record the batch.

    ``warehouse`` is the DuckDB file (a :class:`~pathlib.Path`) or a warehouse URL, as
    in ``SHELFGUARD_WAREHOUSE_URL``: ``duckdb:///PATH`` or ``postgresql[+psycopg2]://...``
    (pass ``settings.warehouse_url``). Personal columns are stored as their pseudonyms
    under ``pseudonym_key`` (default: :func:`shelfguard.pseudonyms.load_key`, read only
    when a file has personal columns), and a ``raw.*`` table an older release stored
    them in is pseudonymised in place. Raises :class:`IngestError` on a file-level
    problem (nothing is written then), :class:`~shelfguard.pseudonyms.PseudonymKeyError`
    when personal data is to be stored and there is no usable key.
    """
    kind, target = _warehouse_kind(warehouse)
    key = _key_source(kind, pseudonym_key)
    source = source.resolve()
    items = discover(source)
    for number, item in enumerate(items, start=1):
        if progress:
            progress(f"hashing {item.path.name}", number - 1, len(items))
        _scan(item)
        _check_has_rows(item)
    batch_id = batch_id_for(items)
    known = {
        item.spec.table: ledger.find_ingested_file(f"raw.{item.spec.table}", item.sha256)
        for item in items
    }
    todo = [item for item in items if known[item.spec.table] is None]

    # Even with nothing new to load, the warehouse is opened: an older release's personal
    # columns are pseudonymised on the next ingest, whatever it brings.
    loaded: dict[str, FileManifest] = {}
    if kind == "postgresql":
        loaded = _load_postgres(str(target), todo, batch_id, progress, key)
    elif todo or Path(target).exists():
        loaded = _load_duckdb(Path(target), todo, batch_id, progress, key)
    # The warehouse has committed: only now does the ledger learn of the batch. A crash
    # from here on is repaired by the rerun: a file the ledger does not know is loaded
    # again, and a load replaces that file's rows (it never adds them twice).
    failpoint("ingest.warehouse_committed")
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
        failpoint("ingest.file_recorded")
        files.append(manifest)
    return IngestManifest(batch_id=batch_id, source=str(source), files=files)


# --------------------------------------------------------------------------------------
# Retention of quarantined personal data
# --------------------------------------------------------------------------------------


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
    pg = pg_connect(url)
    try:
        with pg.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [PG_INGEST_LOCK])
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
        pg.commit()
    except BaseException:
        if not pg.closed:  # a server that went away took the transaction with it
            pg.rollback()
        raise
    finally:
        pg.close()
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
