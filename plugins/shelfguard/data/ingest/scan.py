"""Finding and scanning the files: headers checked, bytes hashed, lines and hazards found.

Nothing is loaded here; a file-level problem raises :class:`IngestError`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from shelfguard.data.wands import MAX_LINE_BYTES, SPECS, FileSpec, IngestError

_CHUNK = 16 * 1024 * 1024


#: Any C0 control byte but TAB and LF (which never is inside a line): NUL, CR and others.
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f]")


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


def batch_id_for(items: Sequence[_Scanned]) -> str:
    """A batch is named by the content it loads: same files, same id."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.spec.file_name):
        digest.update(f"{item.spec.file_name}\0{item.sha256}\n".encode())
    return "batch-" + digest.hexdigest()[:16]
