"""Validation runs in the warehouse: a large batch never travels into Python.

Every statement that reaches DuckDB during the suite run is captured (SQLAlchemy's
``after_cursor_execute``, on GX's engine and ours alike) and re-run afterwards as
``count(*)``: what a statement returns bounds what Python could have fetched from it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from shelfguard.policy import load_policy
from shelfguard.quality import SAMPLE_LIMIT, RowScope, load_suite, run_suites

BATCH_ROWS = 250_000
OTHER_ROWS = 50_000
BAD_RATINGS = BATCH_ROWS // 100
BATCH = "a" * 64
OTHER = "b" * 64


def build_products(path: Path) -> None:
    """raw.products with one big batch (1% impossible ratings) and another batch beside it."""
    rows = """
        select
            i as product_id,
            'Product ' || i as product_name,
            'Class ' || (i % 40) as product_class,
            'Furniture / Class ' || (i % 40) as category_hierarchy,
            'A sturdy product, described at some length for the search model ' || i
                as product_description,
            'color:Black|material:Oak|price:' || (i % 900) as product_features,
            cast(i % 300 as double) as rating_count,
            case when i % 100 = 0 then 7.5 else (i % 50) / 10.0 end as average_rating,
            cast(i % 80 as double) as review_count,
            i + 2 as _line_number,
            ? as _batch_id,
            ? as _file_sha256,
            now() as _ingested_at
        from range(?, ?) as t(i)
    """
    with duckdb.connect(str(path)) as con:
        con.execute("create schema raw")
        con.execute(f"create table raw.products as {rows}", ["batch-big", BATCH, 0, BATCH_ROWS])
        con.execute(
            f"insert into raw.products {rows}",
            ["batch-other", OTHER, BATCH_ROWS, BATCH_ROWS + OTHER_ROWS],
        )


@pytest.fixture
def statements() -> Iterator[list[tuple[str, Any]]]:
    """Every statement executed through SQLAlchemy while the test runs."""
    seen: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        seen.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "after_cursor_execute", capture)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "after_cursor_execute", capture)


def rows_returned(con: duckdb.DuckDBPyConnection, statement: str, parameters: Any) -> int:
    query = f"select count(*) from ({statement.strip().rstrip(';')}) as returned"
    return int(con.execute(query, list(parameters or [])).fetchone()[0])


def test_a_large_batch_is_validated_in_the_warehouse(
    tmp_path: Path, statements: list[tuple[str, Any]]
) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    build_products(warehouse)
    scope = RowScope(column="_file_sha256", partitions={"raw.products": BATCH})
    suite = load_suite("raw_products", load_policy(), scope)

    report = run_suites(
        [suite],
        warehouse_url=f"duckdb:///{warehouse}",
        gx_root=tmp_path / "home",
        run_name="pushdown",
        scope=scope,
    )

    checks = {c["name"]: c for c in report.checks}
    rating = checks["raw_products.average_rating_in_range"]
    assert rating["status"] == "fail"
    assert rating["unexpected_count"] == BAD_RATINGS
    assert len(rating["sample_rows"]) == SAMPLE_LIMIT
    assert report.runs[0].rows == BATCH_ROWS  # the other batch was never counted in
    assert checks["raw_products.product_id_unique"]["status"] == "pass"

    selects = [(s, p) for s, p in statements if s.lstrip().lower().startswith(("select", "with"))]
    scans = [s for s, _ in selects if "raw.products" in s and "unexpected_0" in s]
    assert len(scans) == 1, "the checks were expected to be counted by one SQL query"
    with duckdb.connect(str(warehouse), read_only=True) as con:
        returned = [rows_returned(con, s, p) for s, p in selects]
        table_rows = con.execute("select count(*) from raw.products").fetchone()[0]
    assert table_rows == BATCH_ROWS + OTHER_ROWS
    # GX never fetches more than 200 rows of a result (its MAX_RESULT_RECORDS); here no
    # statement could return more than a column listing or a page of samples.
    assert max(returned) <= 200, max(returned)
    assert sum(returned) < 1_000, sum(returned)
