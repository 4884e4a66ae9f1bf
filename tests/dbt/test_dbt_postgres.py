"""The dbt project built for real on PostgreSQL (the production warehouse).

The raw tables are loaded here with COPY, mirroring ``ingest.SPECS`` (column types,
``_line_number`` / ``_batch_id`` / ``_file_sha256`` / ``_ingested_at``), because the
ingest step itself writes DuckDB only. The same generated files as the DuckDB build are
loaded, so the two warehouses can be compared row for row.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbt_support import BuiltWarehouse, make_settings

from shelfguard.dbt import DbtBuildResult, build
from shelfguard.generator import GenerateResult
from shelfguard.ingest import SPECS, FileSpec
from shelfguard.policy import Policy

pytestmark = pytest.mark.integration

_PG_TYPES = {"DOUBLE": "double precision"}
# COPY in CSV mode with a quote byte that never occurs: WANDS files have no quoting, and
# text such as `"Quoted"` must load as is. Empty fields load as NULL, as in DuckDB.
_COPY_OPTIONS = "format csv, delimiter E'\\t', quote E'\\x01', header false"


def _create_raw_table(cur: Any, spec: FileSpec) -> None:
    columns = ", ".join(
        f'"{name}" {_PG_TYPES.get(sql_type, sql_type)}' for name, sql_type in spec.columns.items()
    )
    cur.execute(
        f"create table if not exists raw.{spec.table} ({columns}, _line_number bigint, "
        "_batch_id varchar, _file_sha256 varchar, _ingested_at timestamptz)"
    )


def _copy_file(cur: Any, spec: FileSpec, path: Path, batch_id: str) -> int:
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    lines = data.rstrip(b"\n").split(b"\n")
    header = lines[0].decode("utf-8").split("\t")
    assert set(header) <= set(spec.columns), f"{path.name}: unexpected columns"
    body = b"".join(
        line + f"\t{number}\t{batch_id}\t{sha256}\n".encode()
        for number, line in enumerate(lines[1:], start=2)  # line 1 is the header
    )
    columns = ", ".join(f'"{name}"' for name in header)
    cur.copy_expert(
        f"copy raw.{spec.table} ({columns}, _line_number, _batch_id, _file_sha256) "
        f"from stdin with ({_COPY_OPTIONS})",
        io.BytesIO(body),
    )
    # One transaction, one now(): every file of the batch shares _ingested_at, as in ingest.
    cur.execute(f"update raw.{spec.table} set _ingested_at = now() where _ingested_at is null")
    return len(lines) - 1


def load_raw(url: str, source: Path, batch_id: str) -> dict[str, int]:
    """Load a folder of WANDS-layout files into ``raw.*`` of a Postgres database."""
    engine = sa.create_engine(url)
    loaded: dict[str, int] = {}
    try:
        connection = engine.raw_connection()
        try:
            cur = connection.cursor()
            cur.execute("create schema if not exists raw")
            for spec in SPECS:
                _create_raw_table(cur, spec)
                path = source / spec.file_name
                if path.exists():
                    loaded[spec.table] = _copy_file(cur, spec, path, batch_id)
            connection.commit()
        finally:
            connection.close()
    finally:
        engine.dispose()
    return loaded


def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def postgres_build(
    postgres_url: str,
    clean_data: GenerateResult,
    policy: Policy,
    tmp_path_factory: pytest.TempPathFactory,
) -> DbtBuildResult:
    loaded = load_raw(postgres_url, clean_data.out_dir, "batch-test")
    assert loaded["search_log"] == clean_data.rows["search_log"]
    settings = make_settings(
        tmp_path_factory.mktemp("pg-home"), {"SHELFGUARD_WAREHOUSE_URL": postgres_url}
    )
    return build(settings, policy)


def test_build_passes_on_postgres(postgres_build: DbtBuildResult) -> None:
    assert postgres_build.target == "postgres"
    assert postgres_build.success, postgres_build.log_tail
    assert postgres_build.failed_nodes() == []
    unit_tests = [n for n in postgres_build.nodes if n.resource_type == "unit_test"]
    assert len(unit_tests) == 7
    assert all(n.status == "pass" for n in unit_tests)


def test_postgres_marts_match_duckdb(
    postgres_build: DbtBuildResult, postgres_url: str, duckdb_warehouse: BuiltWarehouse
) -> None:
    assert postgres_build.success, postgres_build.log_tail
    for mart, key in (
        ("dim_products", "product_id, content_hash, is_active"),
        ("fct_training_pairs", "pair_id, split, grade, n_users, clicks"),
        ("fct_golden_judgements", "judgement_id, query, grade, is_known_product"),
        ("agg_query_popularity", "query, n_searches, n_users, n_clicks"),
        ("agg_category_mix", "product_class, n_products"),
    ):
        sql = f"select {key} from marts.{mart} order by {key}"
        assert pg_rows(postgres_url, sql) == duckdb_warehouse.rows(sql), mart
    weights = "select pair_id, weight, debiased_ctr from marts.fct_training_pairs order by pair_id"
    for (pg_id, pg_weight, pg_ctr), (dk_id, dk_weight, dk_ctr) in zip(
        pg_rows(postgres_url, weights), duckdb_warehouse.rows(weights), strict=True
    ):
        assert pg_id == dk_id
        assert pg_weight == pytest.approx(dk_weight)
        assert pg_ctr == pytest.approx(dk_ctr)
