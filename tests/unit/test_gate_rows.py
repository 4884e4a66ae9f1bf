"""Outcome lines show one row per gate, and never a gate as passed when its task failed."""

from __future__ import annotations

from shelfguard.cli import gate_rows
from shelfguard.config import Settings
from shelfguard.ledger import open_ledger


def test_a_gate_whose_task_failed_is_shown_failed(sg_home: Settings) -> None:
    ledger = open_ledger(sg_home.ledger_url)
    run_id = "catalog_refresh/manual__1"
    ledger.start_run(run_id, "catalog_refresh", lineage={})
    for model in ("stg_products", "stg_queries", "int_pairs", "mart_pairs"):
        ledger.record_gate(run_id, "dbt", "pass", subject=model)
    ledger.record_gate(run_id, "raw_data", "pass", subject="batch:1")
    ledger.record_gate(run_id, "ingest", "warn", subject="batch:1")
    ledger.update_lineage(run_id, failed_tasks=["dbt.mart_search_stats_run", "training_data_gate"])
    run = ledger.get_run(run_id)
    assert run is not None
    rows = {row["name"]: row for row in gate_rows(run, ledger.gate_results(run_id))}
    assert list(rows) == ["dbt", "raw_data", "ingest"]
    assert rows["dbt"] == {
        "name": "dbt",
        "status": "fail",
        "verdicts": 4,
        "passed": 4,
        "failed_tasks": ["dbt.mart_search_stats_run"],
    }
    assert (rows["raw_data"]["status"], rows["ingest"]["status"]) == ("pass", "warn")
    ledger.dispose()
