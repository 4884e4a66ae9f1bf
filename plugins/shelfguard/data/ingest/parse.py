"""Parsing a scanned file with DuckDB: the fast path, the slow path, and the quarantine.

Either way DuckDB only casts; each rejected line gets its reason code (see
:mod:`shelfguard.data.ingest`) and the accepted rows stay in a temporary table, numbered
back to their source lines, for a loader to store.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from shelfguard.data.ingest.manifest import FileManifest
from shelfguard.data.ingest.scan import _CHUNK, _CONTROL_BYTE, _Scanned
from shelfguard.data.wands import (
    BLANK_LINE,
    CONTROL_CHARACTER,
    INVALID_UTF8,
    LINE_TOO_LONG,
    MALFORMED_LINE,
    MAX_LINE_BYTES,
    NUL_CHARACTER,
    STRAY_CARRIAGE_RETURN,
    TOO_FEW_FIELDS,
    TOO_MANY_FIELDS,
    UNPARSEABLE_VALUE,
    IngestError,
)

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


_OTHER_CONTROL_BYTE = re.compile(rb"[\x01-\x08\x0a-\x0c\x0e-\x1f]")  # neither NUL nor CR


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


def _register_lines(con: duckdb.DuckDBPyConnection, parsed: _Parsed) -> None:
    """Each accepted row's source line, as the DuckDB view ``_lines`` (``_idx`` = rowid)."""
    con.register(
        "_lines",
        pa.table(
            {"_idx": np.arange(parsed.accepted), "_line_number": _accepted_line_numbers(parsed)}
        ),
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


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
