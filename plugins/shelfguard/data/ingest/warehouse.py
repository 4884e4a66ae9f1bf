"""Which warehouse a batch goes to, and the progress callback the loaders report to."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

Progress = Callable[[str, int, int], None]


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
