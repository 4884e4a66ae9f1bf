"""Opening the embedded DuckDB file while another process holds it: wait, then say who.

DuckDB lets one process at a time hold a database file open for writing (and no
reader beside it). On the embedded home, two different DAGs may run at once: a
``catalog_refresh`` writing its candidate while a retraining run exports the snapshot
it pinned. Every shelfguard task holds the file only for one short step (an ingest
transaction, a publication, a gate's queries, one dbt model), so a step that finds it
held waits for it (``SHELFGUARD_DUCKDB_WAIT_SECONDS``, default 300) instead of failing
the run; dbt does the same through dbt-duckdb's ``retries`` (``profiles.yml``). Past
the wait it raises :class:`WarehouseBusy`, naming the process that holds the file, as
DuckDB reports it. Snapshot isolation does the rest: readers read a published
snapshot's schema, which no writer touches again (write-audit-publish).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

WAIT_ENV = "SHELFGUARD_DUCKDB_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 300.0
_T = TypeVar("_T")
log = logging.getLogger(__name__)


class WarehouseBusy(RuntimeError):
    """Another process held the DuckDB file for longer than the wait."""


def _wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS)))
    except ValueError:
        return DEFAULT_WAIT_SECONDS


def _held(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def wait_for_file(open_file: Callable[[], _T], path: str) -> _T:
    """``open_file()``, tried again while DuckDB says another process holds ``path``."""
    deadline = time.monotonic() + _wait_seconds()
    delay = 0.05
    waited = False
    while True:
        try:
            return open_file()
        except duckdb.IOException as exc:
            if not _held(exc):
                raise
            if time.monotonic() + delay > deadline:
                holder = str(exc).split("Conflicting lock is held in", 1)[-1].strip()
                raise WarehouseBusy(
                    f"the warehouse {path} stayed in use by another process ({holder}) "
                    f"for {_wait_seconds():.0f} s; is another run still working on this home?"
                ) from exc
            if not waited:
                log.info("waiting for the warehouse %s: another process holds it", path)
                waited = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def connect(
    path: Path | str, *, read_only: bool = False, config: dict[str, Any] | None = None
) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect`` on a database file, waiting while another process holds it."""
    return wait_for_file(
        lambda: duckdb.connect(str(path), read_only=read_only, config=config or {}), str(path)
    )
