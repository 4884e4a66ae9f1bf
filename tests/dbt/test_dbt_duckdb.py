"""The dbt project built for real on DuckDB, on generated data ingested like the DAG does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
from dbt_support import BuiltWarehouse, copy_warehouse, ingest_folder, query

from shelfguard.data.dbt_project import build
from shelfguard.data.generator import GenerateResult, generate
from shelfguard.policy import Policy

MARTS = (
    "dim_products",
    "fct_training_pairs",
    "fct_golden_judgements",
    "agg_category_mix",
    "agg_query_popularity",
)
UNIT_TESTS = {
    "products_keep_the_latest_version_of_the_latest_file",
    "judgement_labels_become_grades",
    "impressions_are_deduplicated_and_pseudonymised",
    "change_feed_is_applied_after_the_snapshot",
    "clicks_are_debiased_by_position",
    "queries_below_k_users_are_dropped",
    "training_pairs_grade_is_the_strongest_engagement",
}
PERSONAL = re.compile(r"\b(user_id|user_email)\b|email", re.IGNORECASE)


def manifest(built: BuiltWarehouse) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(built.result.manifest_path.read_text(encoding="utf-8"))
    return data


def models(built: BuiltWarehouse) -> list[dict[str, Any]]:
    return [n for n in manifest(built)["nodes"].values() if n["resource_type"] == "model"]


def test_build_passes_every_model_and_test(duckdb_warehouse: BuiltWarehouse) -> None:
    result = duckdb_warehouse.result
    assert result.success, result.log_tail
    assert result.failed_nodes() == []
    assert result.test_failures() == {}
    kinds = {node.resource_type for node in result.nodes}
    # The operation is the on-run-start guard that refuses to rebuild a published snapshot.
    assert kinds == {"model", "test", "unit_test", "operation"}
    assert sum(node.resource_type == "model" for node in result.nodes) == 14
    assert len(result.manifest_sha256) == 64


def test_unit_tests_ran(duckdb_warehouse: BuiltWarehouse) -> None:
    ran = {
        n.name: n.status for n in duckdb_warehouse.result.nodes if n.resource_type == "unit_test"
    }
    assert ran == dict.fromkeys(UNIT_TESTS, "pass")


def test_schemas_are_exactly_the_layers(duckdb_warehouse: BuiltWarehouse) -> None:
    found = duckdb_warehouse.rows(
        "select table_schema, count(*) from information_schema.tables "
        "where table_schema in ('staging', 'intermediate', 'marts') group by 1 order by 1"
    )
    assert found == [("intermediate", 3), ("marts", 5), ("staging", 6)]
    kinds = dict(
        duckdb_warehouse.rows(
            "select table_schema, string_agg(distinct table_type, ',') "
            "from information_schema.tables "
            "where table_schema in ('staging', 'intermediate', 'marts') group by 1"
        )
    )
    assert kinds == {"staging": "VIEW", "intermediate": "BASE TABLE", "marts": "BASE TABLE"}


def test_marts_hold_the_clean_catalog(duckdb_warehouse: BuiltWarehouse) -> None:
    data = duckdb_warehouse.data
    (products, active, changes) = duckdb_warehouse.rows(
        "select count(*), count(*) filter (where is_active), "
        "count(*) filter (where product_id >= 2000) from marts.dim_products"
    )[0]
    deletes = duckdb_warehouse.rows("select count(*) from raw.catalog_changes where op = 'delete'")[
        0
    ][0]
    assert products == data.rows["product"] + changes
    assert active == products - deletes
    (judgements,) = duckdb_warehouse.rows("select count(*) from marts.fct_golden_judgements")[0]
    assert judgements == data.rows["label"]
    assert duckdb_warehouse.rows(
        "select count(*) from marts.fct_golden_judgements where not is_known_product"
    ) == [(0,)]
    (total_share,) = duckdb_warehouse.rows("select sum(share) from marts.agg_category_mix")[0]
    assert total_share == pytest.approx(1.0)


def test_text_to_embed_and_content_hash(duckdb_warehouse: BuiltWarehouse) -> None:
    rows = duckdb_warehouse.rows(
        "select product_name, brand, text_to_embed, content_hash, sha256(text_to_embed) "
        "from marts.dim_products order by product_id limit 50"
    )
    for name, brand, text, content_hash, expected in rows:
        assert text.startswith(f"{name}. ")
        assert f"brand: {brand}" in text
        assert content_hash == expected


def test_training_pairs_respect_k_anonymity_against_the_files_users(
    duckdb_warehouse: BuiltWarehouse, clean_data: GenerateResult, policy: Policy
) -> None:
    # Recomputed from the user ids of the source file, independently of the pseudonyms.
    with duckdb.connect() as con:
        rare = {
            text
            for (text,) in con.execute(
                "select lower(trim(regexp_replace(query, '\\s+', ' ', 'g'))) as query "
                "from read_csv(?, delim='\t', header=true, quote='', escape='', "
                "all_varchar=true) group by 1 having count(distinct user_id) < ?",
                [str(clean_data.files["search_log"]), policy.privacy.k_anonymity],
            ).fetchall()
        }
    assert rare, "the clean data set has queries below k: the filter is exercised"
    trained = {q for (q,) in duckdb_warehouse.rows("select query from marts.fct_training_pairs")}
    assert trained.isdisjoint(rare)
    (queries, pairs) = duckdb_warehouse.rows(
        "select count(distinct query), count(*) from marts.fct_training_pairs"
    )[0]
    assert queries > 100
    assert pairs > 1000


def test_split_is_by_query_and_about_ninety_ten(duckdb_warehouse: BuiltWarehouse) -> None:
    assert duckdb_warehouse.rows(
        "select count(*) from (select query from marts.fct_training_pairs "
        "group by query having count(distinct split) > 1)"
    ) == [(0,)]
    (validation_share,) = duckdb_warehouse.rows(
        "select avg(case when split = 'validation' then 1.0 else 0.0 end) "
        "from (select distinct query, split from marts.fct_training_pairs)"
    )[0]
    assert 0.05 <= validation_share <= 0.15
    counts = dict(
        duckdb_warehouse.rows("select split, count(*) from marts.fct_training_pairs group by 1")
    )
    assert counts["train"] >= 200
    assert counts["validation"] >= 20


def test_no_personal_field_reaches_any_model(duckdb_warehouse: BuiltWarehouse) -> None:
    columns = duckdb_warehouse.rows(
        "select table_schema || '.' || table_name || '.' || column_name "
        "from information_schema.columns "
        "where table_schema in ('staging', 'intermediate', 'marts')"
    )
    assert [c for (c,) in columns if PERSONAL.search(c.rsplit(".", 1)[-1])] == []
    for node in models(duckdb_warehouse):
        declared = [name for name in node["columns"] if PERSONAL.search(name)]
        assert declared == [], node["unique_id"]
        if node["fqn"][1] != "staging":
            compiled = node.get("compiled_code") or ""
            assert compiled, f"{node['unique_id']} was not compiled"
            assert not PERSONAL.search(compiled), node["unique_id"]


def test_only_staging_models_read_sources(duckdb_warehouse: BuiltWarehouse) -> None:
    readers = {
        node["name"]
        for node in models(duckdb_warehouse)
        if any(d.startswith("source.") for d in node["depends_on"]["nodes"])
    }
    assert readers == {
        "stg_catalog__products",
        "stg_catalog__queries",
        "stg_catalog__judgements",
        "stg_catalog__changes",
        "stg_behaviour__search_impressions",
    }


def test_every_model_is_described_and_tested(duckdb_warehouse: BuiltWarehouse) -> None:
    nodes = manifest(duckdb_warehouse)["nodes"]
    tested = {n.get("attached_node") for n in nodes.values() if n["resource_type"] == "test"}
    for node in models(duckdb_warehouse):
        assert node["description"].strip(), node["unique_id"]
        assert node["unique_id"] in tested, node["unique_id"]
        for column in node["columns"].values():
            assert column["description"].strip(), f"{node['name']}.{column['name']}"
        if node["fqn"][1] == "marts":
            assert node["contract"]["enforced"], node["unique_id"]


def test_a_failing_test_is_reported_with_its_failing_rows(
    duckdb_warehouse: BuiltWarehouse, policy: Policy, tmp_path: Path
) -> None:
    settings = copy_warehouse(duckdb_warehouse, tmp_path / "home")
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute(
            "insert into raw.judgements "
            "(id, query_id, product_id, label, _line_number, _batch_id, _file_sha256, _ingested_at) "
            "select 900000 + id, query_id, product_id, 'Maybe', _line_number + 100000, "
            "_batch_id, _file_sha256, _ingested_at from raw.judgements order by id limit 3"
        )
    result = build(settings, policy, select="stg_catalog__judgements")
    assert not result.success
    failures = result.test_failures()
    assert failures["not_null_stg_catalog__judgements_grade"] == 3
    assert (
        failures["accepted_values_stg_catalog__judgements_label__Exact__Partial__Irrelevant"] == 1
    )
    assert all(node.resource_type == "test" for node in result.failed_nodes())


def test_duplicate_ids_keep_the_latest_line_of_the_latest_file(
    duckdb_warehouse: BuiltWarehouse, policy: Policy, tmp_path: Path
) -> None:
    # A newer product.csv with ~3% repeated ids lands on top of the clean snapshot.
    dup = generate(tmp_path / "dup", products=2000, seed=42, defects=["duplicate_ids"])
    (tmp_path / "dup-products").mkdir()
    (tmp_path / "dup" / "product.csv").rename(tmp_path / "dup-products" / "product.csv")
    settings = copy_warehouse(duckdb_warehouse, tmp_path / "home")
    ingest_folder(tmp_path / "dup-products", settings)

    result = build(settings, policy, select="+dim_products")
    assert result.success, result.log_tail
    files, rows, ids = query(
        settings,
        "select count(distinct _file_sha256), count(*) filter (where _file_sha256 = "
        "(select _file_sha256 from raw.products order by _ingested_at desc limit 1)), "
        "count(distinct product_id) from raw.products",
    )[0]
    assert (files, rows, ids) == (2, dup.rows["product"], 2000)
    assert dup.rows["product"] > 2000
    mismatches = query(
        settings,
        """
        with latest_file as (
            select _file_sha256 from raw.products order by _ingested_at desc limit 1
        ),
        last_lines as (
            select product_id, product_name, product_description,
                row_number() over (partition by product_id order by _line_number desc) as rn
            from raw.products join latest_file using (_file_sha256)
        )
        select count(*) from last_lines
        join staging.stg_catalog__products stg using (product_id)
        where last_lines.rn = 1 and (
            stg.product_name <> trim(regexp_replace(last_lines.product_name, '\\s+', ' ', 'g'))
            or stg.product_description <> last_lines.product_description
        )
        """,
    )
    assert mismatches == [(0,)]
    # The change feed arrived before this snapshot, so the snapshot supersedes it.
    assert query(
        settings, "select count(*), count(*) filter (where is_active) from marts.dim_products"
    ) == [(2000, 2000)]


def test_rebuilding_is_idempotent(
    duckdb_warehouse: BuiltWarehouse, policy: Policy, tmp_path: Path
) -> None:
    settings = copy_warehouse(duckdb_warehouse, tmp_path / "home")
    fingerprint = (
        "select count(*), sum(hash(pair_id, split, grade, weight)) from marts.fct_training_pairs"
    )
    before = query(settings, fingerprint)
    result = build(settings, policy, select="marts")
    assert result.success, result.log_tail
    assert query(settings, fingerprint) == before
    assert result.manifest_sha256 == duckdb_warehouse.result.manifest_sha256
