"""The raw_data gate with the real GX, DuckDB and ledger, on generated batches.

Every batch lands in the same warehouse (module-scoped home): the raw tables hold
all of them at once, and each gate must judge only the rows of its own batch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shelfguard import gates
from shelfguard.gates import GateError
from shelfguard.ledger import GateRecord
from shelfguard.policy import Policy, load_policy
from shelfguard.quality import SAMPLE_LIMIT, default_suites_dir, docs_index, template_cache_dir

# Each raw defect of the generator -> the check that must block the batch because of it.
DEFECT_CHECKS = {
    "duplicate_ids": "raw_products.product_id_unique",
    "empty_names": "raw_products.product_name_present",
    "bad_numbers": "raw_data.quarantine_share.products",
    "out_of_range": "raw_products.average_rating_in_range",
    "schema_extra": "raw_data.extra_columns.products",
    "bad_utf8": "raw_data.quarantine_share.products",
    "ragged_rows": "raw_data.quarantine_share.search_log",
    "orphan_judgements": "raw_judgements.product_id_known",
}


def recorded(home: Any, run_id: str) -> GateRecord:
    (row,) = [g for g in home.ledger.gate_results(run_id) if g.gate == "raw_data"]
    return row


def check_named(checks: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (found,) = [c for c in checks if c["name"] == name]
    return found


def rerun(home: Any, run_id: str, policy: Policy | None = None) -> gates.GateOutcome:
    return gates.run_gate(
        "raw_data", run_id, settings=home.settings, ledger=home.ledger, policy=policy
    )


def test_a_clean_batch_passes_and_is_recorded(home: Any) -> None:
    outcome = home.raw_gate()

    assert outcome.status == "pass", outcome.summary
    assert outcome.failed_checks == []
    row = recorded(home, home.land())
    batch_id = home.ledger.get_run(home.land()).lineage["batch_id"]
    assert (row.status, row.subject) == ("pass", f"data:{batch_id}")
    assert row.metrics["files"]["product.csv"]["rows_quarantined"] == 0
    assert row.metrics["suites"]["raw_products"]["rows"] == 400
    names = {c["name"] for c in row.checks}
    assert {"raw_products.product_id_unique", "raw_data.quarantine_share.products"} <= names
    assert all(c["comment"] for c in row.checks)
    assert all("sample_rows" not in c for c in row.checks)
    assert row.report_uri and row.report_uri.startswith("file://")
    assert Path(row.report_uri.removeprefix("file://")).is_file()


def test_data_docs_show_each_run_and_render_from_compiled_templates(home: Any) -> None:
    cache = template_cache_dir(home.settings.home)
    index = docs_index(home.settings.home)
    compiled: list[str] = []
    for defect, column in (("duplicate_ids", "product_id"), ("empty_names", "product_name")):
        run_id = home.land(defect)
        outcome = rerun(home, run_id)
        assert outcome.status == "fail"
        if not compiled:
            compiled = sorted(p.name for p in cache.iterdir())
            assert compiled, "the Data Docs templates are compiled once and kept"
        else:
            now = sorted(p.name for p in cache.iterdir())
            assert now == compiled, "the second run renders from the kept templates"
        folder = index.parent / "validations" / "raw_products" / run_id.replace("/", "__")
        (page,) = folder.rglob("*.html")
        html = page.read_text(encoding="utf-8")
        assert "raw_products" in html and column in html
        assert outcome.report_uri == index.as_uri()


def test_the_run_records_the_suites_and_policy_it_was_judged_by(home: Any) -> None:
    home.raw_gate()

    lineage = home.ledger.get_run(home.land()).lineage

    for suite in ("raw_products", "raw_search_log", "raw_judgements"):
        path = default_suites_dir() / f"{suite}.yml"
        assert lineage["suites"][suite] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert lineage["policy_sha256"] == load_policy().sha256


@pytest.mark.parametrize("defect", sorted(DEFECT_CHECKS))
def test_each_raw_defect_fails_the_gate_naming_its_check(home: Any, defect: str) -> None:
    outcome = home.raw_gate(defect)

    expected = DEFECT_CHECKS[defect]
    assert outcome.status == "fail", outcome.summary
    assert expected in outcome.summary
    row = recorded(home, home.land(defect))
    assert row.status == "fail"
    failed = check_named(row.checks, expected)
    assert (failed["status"], failed["severity"]) == ("fail", "error")
    assert failed["comment"] and failed["message"]
    assert failed["unexpected_count"] > 0
    assert 0 < len(failed["sample_rows"]) <= SAMPLE_LIMIT


def test_sample_rows_point_at_the_offending_rows(home: Any) -> None:
    outcome = home.raw_gate("duplicate_ids")
    duplicates = check_named(outcome.checks, "raw_products.product_id_unique")["sample_rows"]
    sha256 = home.ledger.get_run(home.land("duplicate_ids")).lineage["inputs"]["product.csv"]

    with duckdb.connect(str(home.settings.duckdb_path), read_only=True) as con:
        repeated = {
            product_id
            for (product_id,) in con.execute(
                "select product_id from raw.products where _file_sha256 = ? "
                "group by product_id having count(*) > 1",
                [sha256],
            ).fetchall()
        }

    assert all(set(sample) >= {"product_id", "_line_number"} for sample in duplicates)
    assert {sample["product_id"] for sample in duplicates} <= repeated


def test_quarantined_lines_are_sampled_from_the_quarantine(home: Any) -> None:
    outcome = home.raw_gate("bad_utf8")

    check = check_named(outcome.checks, "raw_data.quarantine_share.products")

    assert {s["reason"] for s in check["sample_rows"]} == {"invalid_utf8"}
    assert all(s["line_number"] >= 2 and s["original_line"] for s in check["sample_rows"])


def test_aggregate_checks_report_the_share_against_the_limit(home: Any) -> None:
    outcome = home.raw_gate("orphan_judgements")

    check = check_named(outcome.checks, "raw_judgements.product_id_known")

    assert check["observed"]["share"] > check["observed"]["max_share"] == 0.01
    assert check["unexpected_count"] == check["observed"]["on_unknown_products"]
    assert all(s["product_id"] >= 1_000_000 for s in check["sample_rows"])


def test_searches_for_golden_queries_warn_before_training(home: Any) -> None:
    clean = check_named(home.raw_gate().checks, "raw_search_log.query_not_golden")
    outcome = home.raw_gate("golden_leak")
    sha256 = home.ledger.get_run(home.land("golden_leak")).lineage["inputs"]["query.csv"]
    with duckdb.connect(str(home.settings.duckdb_path), read_only=True) as con:
        golden = {
            query
            for (query,) in con.execute(
                "select query from raw.queries where _file_sha256 = ?", [sha256]
            ).fetchall()
        }

    leak = check_named(outcome.checks, "raw_search_log.query_not_golden")

    assert clean["status"] == "pass"
    # A warning, not a block: the training_data gate blocks the leak if it reaches training.
    assert outcome.status == "warn", outcome.summary
    assert (leak["status"], leak["severity"]) == ("warn", "warn")
    assert leak["comment"] and leak["unexpected_count"] > 0
    assert all(set(s) >= {"search_id", "position", "_line_number"} for s in leak["sample_rows"])
    assert {s["query"] for s in leak["sample_rows"]} <= golden


def test_other_batches_in_the_same_tables_do_not_leak_into_a_gate(home: Any) -> None:
    for defect in DEFECT_CHECKS:
        home.land(defect)

    outcome = rerun(home, home.land())

    assert outcome.status == "pass", outcome.summary
    assert [g.gate for g in home.ledger.gate_results(home.land())].count("raw_data") == 1


def test_a_policy_severity_turns_a_failure_into_a_warning(home: Any) -> None:
    policy = load_policy()
    relaxed = policy.model_copy(update={"severities": {"raw_data.extra_columns": "warn"}})

    outcome = rerun(home, home.land("schema_extra"), relaxed)

    assert outcome.status == "warn", outcome.summary
    (check,) = outcome.failed_checks
    assert (check["name"], check["status"]) == ("raw_data.extra_columns.products", "warn")
    assert recorded(home, home.land("schema_extra")).status == "warn"


def test_extra_columns_pass_when_the_policy_allows_them(home: Any) -> None:
    policy = load_policy()
    allowing = policy.model_copy(
        update={"raw_data": policy.raw_data.model_copy(update={"allow_extra_columns": True})}
    )

    assert rerun(home, home.land("schema_extra"), allowing).status == "pass"


def test_a_run_without_a_batch_cannot_be_gated(home: Any) -> None:
    run_id = home.start("no-ingest", dag_id="catalog_refresh")

    with pytest.raises(GateError, match="no batch_id"):
        rerun(home, run_id)


def test_a_published_batch_delivered_again_is_judged_and_stays_published(
    fresh_home: Any,
) -> None:
    first = fresh_home.land()
    assert rerun(fresh_home, first).status == "pass"
    batch_id = str(fresh_home.ledger.get_run(first).lineage["batch_id"])
    fresh_home.ledger.set_batch_state(batch_id, "published", run_id=first, snapshot_id="snap-1")
    # The same files again, in a run of their own: the gate judges them, the batch stays.
    again = fresh_home.land_again()
    assert fresh_home.ledger.get_run(again).lineage["batch_id"] == batch_id
    assert rerun(fresh_home, again).status == "pass"
    assert recorded(fresh_home, again).status == "pass"
    assert fresh_home.ledger.get_batch(batch_id).state == "published"
