"""The training_data gate on fixture marts (the dbt contract's columns), real GX and ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pytest

from shelfguard import gates
from shelfguard.config import load_settings, project_root
from shelfguard.ledger import Ledger


def judge(home: Any, airflow_run_id: str) -> gates.GateOutcome:
    run_id = home.start(airflow_run_id)
    return gates.run_gate("training_data", run_id, settings=home.settings, ledger=home.ledger)


def failed_names(outcome: gates.GateOutcome) -> set[str]:
    return {c["name"] for c in outcome.failed_checks}


def test_clean_marts_pass_and_become_the_category_baseline(marts_home: Any) -> None:
    outcome = judge(marts_home, "first")

    assert outcome.status == "pass", outcome.summary
    (drift,) = [c for c in outcome.checks if c["name"] == "training_data.category_drift"]
    assert (drift["status"], drift["observed"]) == ("pass", "no baseline yet")
    assert outcome.metrics["category_mix"]["Class 0"] == pytest.approx(0.1)
    assert outcome.metrics["pairs_per_split"] == {"train": 360, "validation": 40}
    (row,) = marts_home.ledger.gate_results("search_model_retraining/first")
    assert (row.gate, row.status, row.subject) == ("training_data", "pass", outcome.subject)
    assert row.metrics["category_mix"] == outcome.metrics["category_mix"]
    lineage = marts_home.ledger.get_run("search_model_retraining/first").lineage
    assert set(lineage["suites"]) == {"training_pairs", "golden_set"}


def test_the_subject_is_a_fingerprint_of_the_marts_content(marts_home: Any) -> None:
    first = judge(marts_home, "one")
    again = judge(marts_home, "two")
    marts_home.build_marts("k_anonymity")
    changed = judge(marts_home, "three")

    assert first.subject == again.subject
    assert first.subject.startswith("data:")
    assert changed.subject != first.subject


def test_a_golden_query_in_the_training_pairs_fails_the_gate(marts_home: Any) -> None:
    marts_home.build_marts("golden_leak")

    outcome = judge(marts_home, "leak")

    assert outcome.status == "fail"
    assert failed_names(outcome) == {"training_pairs.no_golden_query_leak"}
    assert "training_pairs.no_golden_query_leak" in outcome.summary
    (leak,) = outcome.failed_checks
    # Compared after normalisation: case and spacing do not hide a leaked query.
    assert leak["sample_rows"] == [
        {"pair_id": "pair-leak", "query": "  Golden  QUERY 3 ", "split": "train"}
    ]


def test_a_query_typed_by_fewer_than_k_users_fails_the_gate(marts_home: Any) -> None:
    marts_home.build_marts("k_anonymity")

    outcome = judge(marts_home, "rare-query")

    assert outcome.status == "fail"
    assert failed_names(outcome) == {"training_pairs.k_anonymity"}
    (check,) = outcome.failed_checks
    assert check["sample_rows"] == [
        {"query": "training query 17", "n_pairs": 5, "n_users": 2, "k": 5}
    ]


def test_a_category_shift_fails_against_the_last_passed_run_only(marts_home: Any) -> None:
    baseline = judge(marts_home, "baseline")
    marts_home.build_marts("category_shift")
    shifted = judge(marts_home, "shifted")
    marts_home.build_marts("clean")
    back = judge(marts_home, "back")

    assert baseline.status == "pass"
    assert shifted.status == "fail"
    assert failed_names(shifted) == {"training_data.category_drift"}
    (drift,) = shifted.failed_checks
    assert drift["observed"] > 0.15
    assert drift["sample_rows"][0]["product_class"] == "Class 0"
    assert shifted.metrics["baseline_run_id"] == "search_model_retraining/baseline"
    # The failed run never became the baseline: the next one compares with "baseline".
    assert back.status == "pass"
    assert back.metrics["baseline_run_id"] == "search_model_retraining/baseline"
    assert back.metrics["category_drift"] == pytest.approx(0.0)


CATEGORY_MIX_SUITE = """\
suite: category_mix
table: marts.agg_category_mix
expectations:
  # a class listed with no products: its share of the mix means nothing
  - id: n_products_positive
    type: expect_column_values_to_be_between
    severity: error
    kwargs: {column: n_products, min_value: 1}
"""


def test_a_required_suite_deleted_fails_the_gate_and_a_new_one_runs(
    marts_home: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout whose golden_set.yml was deleted and which gained a suite file, judged by
    # the shipped policy (it requires golden_set and knows nothing of category_mix).
    checkout = tmp_path / "checkout"
    (checkout / "expectations").mkdir(parents=True)
    for path in (project_root() / "expectations").glob("*.yml"):
        if path.name != "golden_set.yml":
            (checkout / "expectations" / path.name).write_bytes(path.read_bytes())
    (checkout / "expectations" / "category_mix.yml").write_text(CATEGORY_MIX_SUITE)
    (checkout / "governance.yml").write_bytes((project_root() / "governance.yml").read_bytes())
    monkeypatch.setenv("SHELFGUARD_PROJECT_DIR", str(checkout))

    outcome = judge(marts_home, "suite-deleted")

    assert outcome.status == "fail"
    assert failed_names(outcome) == {"training_data.required_suite.golden_set"}
    (row,) = marts_home.ledger.gate_results("search_model_retraining/suite-deleted")
    recorded = {c["name"]: c for c in row.checks}
    missing = recorded["training_data.required_suite.golden_set"]
    assert (row.status, missing["status"]) == ("fail", "fail")
    assert missing["message"].startswith("the policy requires suite golden_set in training_data")
    assert recorded["training_data.required_suite.training_pairs"]["status"] == "pass"
    assert recorded["category_mix.n_products_positive"]["status"] == "pass"
    assert set(outcome.metrics["suites"]) == {"category_mix", "training_pairs"}


def test_missing_marts_fail_the_gate_instead_of_crashing(fresh_home: Any) -> None:
    with pytest.raises(gates.GateError, match="does not exist"):
        judge(fresh_home, "no-warehouse")
    duckdb.connect(str(fresh_home.settings.duckdb_path)).close()

    outcome = judge(fresh_home, "no-marts")

    assert outcome.status == "fail"
    assert failed_names(outcome) == {
        "training_pairs.table",
        "golden_set.table",
        "training_data.category_drift",
    }


def test_the_gate_runs_on_postgres_too(postgres_marts: str, tmp_path: Path) -> None:
    settings = load_settings(
        {"SHELFGUARD_HOME": str(tmp_path / "home"), "SHELFGUARD_WAREHOUSE_URL": postgres_marts}
    )
    settings.ensure_dirs()
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    ledger.start_run("search_model_retraining/pg", "search_model_retraining")
    try:
        outcome = gates.run_gate(
            "training_data", "search_model_retraining/pg", settings=settings, ledger=ledger
        )
    finally:
        ledger.dispose()

    assert failed_names(outcome) == {"training_pairs.no_golden_query_leak"}
    assert outcome.metrics["tables"]["marts.fct_training_pairs"]["rows"] == 401
