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
taken when the hashing pass (:func:`scan._scan`, vectorised with numpy) finds none of what
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
(:mod:`shelfguard.data.pseudonyms`), computed in this process, and neither ``user_id`` nor
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

The package's rooms: :mod:`~shelfguard.data.wands` (the files, columns and reason
codes), :mod:`~shelfguard.data.ingest.scan` (finding, hashing, hazards),
:mod:`~shelfguard.data.ingest.parse` (DuckDB's fast and slow paths, quarantine),
:mod:`~shelfguard.data.ingest.pseudonymise`, :mod:`~shelfguard.data.ingest.duckdb_load`,
:mod:`~shelfguard.data.ingest.postgres_load`, :mod:`~shelfguard.data.ingest.manifest` and
:mod:`~shelfguard.data.ingest.purge`; :func:`ingest` here runs a batch through them.
"""

from __future__ import annotations

from pathlib import Path

from shelfguard.data.ingest.duckdb_load import _load_duckdb
from shelfguard.data.ingest.manifest import FileManifest, IngestManifest, _from_record, _to_record
from shelfguard.data.ingest.postgres_load import (
    PG_INGEST_LOCK,
    _load_postgres,
    pg_connect,
    pg_table_ddl,
)
from shelfguard.data.ingest.pseudonymise import KeySource, _key_source
from shelfguard.data.ingest.purge import RETENTION_LOG, purge_expired_quarantine
from shelfguard.data.ingest.scan import _check_has_rows, _scan, batch_id_for, discover
from shelfguard.data.ingest.warehouse import Progress, _warehouse_kind
from shelfguard.data.wands import (
    BLANK_LINE,
    CHANGE_COLUMNS,
    CONTROL_CHARACTER,
    FILES,
    INVALID_UTF8,
    LABEL_COLUMNS,
    LINE_TOO_LONG,
    MALFORMED_LINE,
    MAX_LINE_BYTES,
    NUL_CHARACTER,
    PRODUCT_COLUMNS,
    QUERY_COLUMNS,
    SEARCH_LOG_COLUMNS,
    SPECS,
    STRAY_CARRIAGE_RETURN,
    TOO_FEW_FIELDS,
    TOO_MANY_FIELDS,
    UNPARSEABLE_VALUE,
    FileSpec,
    IngestError,
)
from shelfguard.failpoints import failpoint
from shelfguard.ledger import Ledger

__all__ = [
    "BLANK_LINE",
    "CHANGE_COLUMNS",
    "CONTROL_CHARACTER",
    "FILES",
    "INVALID_UTF8",
    "LABEL_COLUMNS",
    "LINE_TOO_LONG",
    "MALFORMED_LINE",
    "MAX_LINE_BYTES",
    "NUL_CHARACTER",
    "PG_INGEST_LOCK",
    "PRODUCT_COLUMNS",
    "QUERY_COLUMNS",
    "RETENTION_LOG",
    "SEARCH_LOG_COLUMNS",
    "SPECS",
    "STRAY_CARRIAGE_RETURN",
    "TOO_FEW_FIELDS",
    "TOO_MANY_FIELDS",
    "UNPARSEABLE_VALUE",
    "FileManifest",
    "FileSpec",
    "IngestError",
    "IngestManifest",
    "KeySource",
    "Progress",
    "batch_id_for",
    "discover",
    "ingest",
    "pg_connect",
    "pg_table_ddl",
    "purge_expired_quarantine",
]


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
    under ``pseudonym_key`` (default: :func:`shelfguard.data.pseudonyms.load_key`, read only
    when a file has personal columns), and a ``raw.*`` table an older release stored
    them in is pseudonymised in place. Raises :class:`IngestError` on a file-level
    problem (nothing is written then), :class:`~shelfguard.data.pseudonyms.PseudonymKeyError`
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
        ledger.record_ingested_file(_to_record(manifest, batch_id, run_id))
        failpoint("ingest.file_recorded")
        files.append(manifest)
    return IngestManifest(batch_id=batch_id, source=str(source), files=files)
