"""The dbt project built for real on PostgreSQL (the production warehouse).

The raw tables are loaded by the ingest step itself (``ingest(source, postgres_url, ...)``:
DuckDB parses, COPY loads), from the same generated files as the DuckDB build, so the
two warehouses can be compared row for row.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbt_support import TEST_PSEUDONYM_KEY, BuiltWarehouse, make_settings
from ingest_support import pg_rows

from shelfguard.data.dbt_project import DbtBuildResult, build
from shelfguard.data.generator import GenerateResult
from shelfguard.data.ingest import ingest
from shelfguard.data.publication import register_batch
from shelfguard.ledger import Ledger
from shelfguard.policy import Policy

pytestmark = pytest.mark.integration


def load_raw(url: str, source: Path, ledger_path: Path) -> tuple[str, dict[str, int]]:
    """Ingest a folder of WANDS-layout files into ``raw.*`` of a Postgres database and
    register the batch (staging reads it as the build's candidate); returns its id and
    the rows accepted per table."""
    ledger = Ledger(f"sqlite:///{ledger_path}")
    try:
        ledger.migrate()
        manifest = ingest(source, url, ledger, pseudonym_key=TEST_PSEUDONYM_KEY)
    finally:
        ledger.dispose()
    settings = make_settings(ledger_path.parent, {"SHELFGUARD_WAREHOUSE_URL": url})
    register_batch(settings, manifest.batch_id, [(f.table, f.sha256) for f in manifest.files])
    return manifest.batch_id, {
        f.table.removeprefix("raw."): f.rows_accepted for f in manifest.files
    }


@pytest.fixture(scope="module")
def postgres_build(
    postgres_url: str,
    clean_data: GenerateResult,
    policy: Policy,
    tmp_path_factory: pytest.TempPathFactory,
) -> DbtBuildResult:
    home = tmp_path_factory.mktemp("pg-home")
    batch_id, loaded = load_raw(postgres_url, clean_data.out_dir, home / "ledger.sqlite")
    assert loaded["search_log"] == clean_data.rows["search_log"]
    settings = make_settings(home, {"SHELFGUARD_WAREHOUSE_URL": postgres_url})
    return build(settings, policy, candidate_batch=batch_id)


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


def _waiting_to_create_schema(url: str) -> bool:
    """Whether a session of ``url``'s database waits on a lock to create a schema."""
    database = url.rsplit("/", 1)[-1]
    found = pg_rows(
        url.rsplit("/", 1)[0] + "/postgres",
        "select count(*) from pg_stat_activity "
        f"where datname = '{database}' and wait_event_type = 'Lock' "
        "and query ilike '%create schema%'",
    )
    return bool(found[0][0])


def test_a_schema_created_by_a_concurrent_dbt_task_does_not_fail_this_one(
    fresh_postgres_url: str,
    clean_data: GenerateResult,
    policy: Policy,
    tmp_path: Path,
) -> None:
    """Two Cosmos tasks of a new warehouse both create ``staging``: the one that loses
    PostgreSQL's race must build its model, not fail on the schema the other made.

    The race is staged, not hoped for: another session creates ``staging`` and holds its
    transaction open until dbt is seen waiting on it, then commits.
    """
    batch_id, _ = load_raw(fresh_postgres_url, clean_data.out_dir, tmp_path / "ledger.sqlite")
    settings = make_settings(tmp_path, {"SHELFGUARD_WAREHOUSE_URL": fresh_postgres_url})
    engine = sa.create_engine(fresh_postgres_url)
    results: list[DbtBuildResult] = []
    try:
        with engine.connect() as other_task:
            transaction = other_task.begin()
            other_task.execute(sa.text("create schema staging"))
            with ThreadPoolExecutor(1) as pool:
                # Two models: the test that relates them is selected with them.
                models = ["stg_catalog__queries", "stg_catalog__judgements"]
                running = pool.submit(build, settings, policy, models, candidate_batch=batch_id)
                deadline = time.monotonic() + 120
                while not _waiting_to_create_schema(fresh_postgres_url):
                    assert not running.done(), "dbt finished without creating `staging`"
                    assert time.monotonic() < deadline, "dbt never reached `create schema`"
                    time.sleep(0.2)
                transaction.commit()
                results.append(running.result(timeout=300))
    finally:
        engine.dispose()
    result = results[0]
    assert result.success, result.log_tail
    built = sorted(n.unique_id for n in result.nodes if n.resource_type == "model")
    assert built == [
        "model.shelfguard.stg_catalog__judgements",
        "model.shelfguard.stg_catalog__queries",
    ]
    assert pg_rows(fresh_postgres_url, "select count(*) from staging.stg_catalog__queries")[0][0]
