"""How the five files' lines reach the disk (their names and columns:
:mod:`shelfguard.data.wands`).

Every writer streams through ``_atomic_writer`` (readers never see half a file) and
``_encode`` (which turns the bad-UTF-8 markers into raw invalid bytes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

ProgressCallback = Callable[[str, int, int], None]
_CHUNK_ROWS = 10_000
# NUL never occurs in generated text, so it marks where raw invalid bytes go after encoding.
_BAD_UTF8_MARKERS = {"\x00\x01": b"\xff\xfe", "\x00\x02": b"\xc3"}


@contextmanager
def _atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write to a sibling temp file and rename, so readers never see half a file."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _header(columns: Sequence[str]) -> bytes:
    return ("\t".join(columns) + "\n").encode()


def _encode(lines: list[str]) -> bytes:
    data = ("\n".join(lines) + "\n").encode()
    if b"\x00" in data:
        for marker, raw in _BAD_UTF8_MARKERS.items():
            data = data.replace(marker.encode(), raw)
    return data
