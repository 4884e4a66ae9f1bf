"""Ingest test helpers: hand-written WANDS-layout source files, and what a PostgreSQL
warehouse holds after a load.

A module of its own (not conftest.py) so test modules can import it by a unique name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

#: The header of a hand-written ``product.csv`` (tab-separated, as WANDS ships it).
HEADER = (
    "product_id\tproduct_name\tproduct_class\tcategory_hierarchy\tproduct_description"
    "\tproduct_features\trating_count\taverage_rating\treview_count"
)


def product_line(pid: object, name: str = "oak table", rating: str = "4.5") -> bytes:
    """One ``product.csv`` line (no terminator) of a dining table."""
    return (
        f"{pid}\t{name}\tDining Tables\tFurniture / Dining / Tables\tsolid oak"
        f"\tcolor:brown|price:199.00\t12\t{rating}\t3"
    ).encode()


def write(folder: Path, name: str, lines: list[bytes], newline: bytes = b"\n") -> Path:
    """Write ``lines`` as ``folder/name``, each ended by ``newline``; returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(newline.join(lines) + newline)
    return path


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    """The rows of one query against the PostgreSQL database at ``url``."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()
