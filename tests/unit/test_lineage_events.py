"""OpenLineage events for one retraining chain, written by a real client's file transport."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shelfguard import lineage_events as le
from shelfguard.config import Settings
from shelfguard.gates import GateOutcome
from shelfguard.lineage import openlineage_transport

RAW = GateOutcome(
    gate="raw_data",
    status="pass",
    subject="batch-1",
    checks=[
        {"name": "product_id_not_null", "status": "pass", "column": "product_id"},
        {"name": "row_count_positive", "status": "pass"},
    ],
)
TRAINING = GateOutcome(
    gate="training_data",
    status="warn",
    subject="fct_training_pairs",
    checks=[
        {"name": "no_golden_leakage", "status": "pass", "column": "query"},
        {"name": "category_drift", "status": "warn", "severity": "warn"},
        {"name": "skipped_check", "status": "skip"},
    ],
)


def _read_events(home: Path) -> list[dict[str, Any]]:
    files = sorted((home / "lineage").iterdir())
    return [json.loads(f.read_text()) for f in files]


def test_dataset_naming(tmp_path: Path) -> None:
    duck = f"duckdb:///{tmp_path}/warehouse.duckdb"
    assert le.table_name(duck, "marts", "dim_products") == (
        f"duckdb://{tmp_path}/warehouse.duckdb",
        "warehouse.marts.dim_products",
    )
    pg = "postgresql+psycopg://u:p@db.internal:6543/shelf"
    assert le.table_name(pg, "marts", "dim_products") == (
        "postgres://db.internal:6543",
        "shelf.marts.dim_products",
    )
    s3 = le.file_dataset("s3://landing/batches/products.csv", "ab" * 32)
    assert (s3.namespace, s3.name) == ("s3://landing", "batches/products.csv")
    local = le.file_dataset(tmp_path / "products.csv")
    assert (local.namespace, local.name) == ("file", str(tmp_path / "products.csv"))
    with pytest.raises(ValueError):
        le.warehouse_namespace("sqlite:///x.db")


def test_assertions_facet_one_per_check() -> None:
    facet = le.assertions_facet(TRAINING)
    assert [(a.assertion, a.success, a.column) for a in facet.assertions] == [
        ("no_golden_leakage", True, "query"),
        ("category_drift", False, None),
    ]


def test_retraining_chain_through_file_transport(tmp_path: Path) -> None:
    warehouse = f"duckdb:///{tmp_path}/warehouse.duckdb"
    file_sha, model_sha, index_sha = "a" * 64, "b" * 64, "c" * 64
    marts = ("dim_products", "fct_training_pairs", "fct_golden_judgements")
    refresh = "catalog_refresh/manual__1"
    retrain = "search_model_retraining/asset_triggered__1"
    events = [
        le.run_event(
            "catalog_refresh.ingest",
            refresh,
            inputs=[le.file_dataset(tmp_path / "landing" / "products.csv", file_sha)],
            outputs=[le.table_dataset(warehouse, "raw", "products", output=True, gate=RAW)],
        ),
        le.run_event(
            "catalog_refresh.publish",
            refresh,
            inputs=[le.table_dataset(warehouse, "raw", "products")],
            outputs=[le.table_dataset(warehouse, "marts", m, output=True) for m in marts],
            run_facets={"shelfguard_outcome": le.ShelfguardOutcomeRunFacet(outcome="published")},
        ),
        le.run_event(
            "search_model_retraining.train",
            retrain,
            inputs=[le.table_dataset(warehouse, "marts", "fct_training_pairs", gate=TRAINING)],
            outputs=[le.model_dataset(model_sha)],
            run_facets={
                "shelfguard_outcome": le.ShelfguardOutcomeRunFacet(outcome="promoted"),
                "shelfguard_approval": le.ShelfguardApprovalRunFacet(
                    decision="approved", approver="alice"
                ),
            },
        ),
        le.run_event(
            "search_model_retraining.embed_catalog",
            retrain,
            inputs=[
                le.model_dataset(model_sha, output=False),
                le.table_dataset(warehouse, "marts", "dim_products"),
            ],
            outputs=[le.index_dataset(index_sha)],
        ),
    ]
    le.emit(le.file_client(tmp_path), events)

    written = _read_events(tmp_path)
    assert len(written) == 4

    def ids(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(d["namespace"], d["name"]) for d in datasets}

    by_job = {e["job"]["name"]: e for e in written}
    ingest, publish = by_job["catalog_refresh.ingest"], by_job["catalog_refresh.publish"]
    train, embed = (
        by_job["search_model_retraining.train"],
        by_job["search_model_retraining.embed_catalog"],
    )
    # Each step reads what the previous one wrote: ingest -> marts -> model -> index.
    assert ids(ingest["outputs"]) <= ids(publish["inputs"])
    assert ids(train["inputs"]) <= ids(publish["outputs"])
    assert ids(train["outputs"]) <= ids(embed["inputs"])
    assert ids(embed["outputs"]) == {(le.INDEX_NAMESPACE, index_sha)}
    assert ingest["inputs"][0]["facets"]["version"]["datasetVersion"] == file_sha
    # Both runs of a DAG share one run id; the two DAG runs differ.
    assert ingest["run"]["runId"] == publish["run"]["runId"] != train["run"]["runId"]
    # One DataQualityAssertions facet per gate, on the dataset the gate guarded.
    gated = [
        d["facets"]["dataQualityAssertions"]
        for e in written
        for d in e["inputs"] + e["outputs"]
        if "dataQualityAssertions" in d["facets"]
    ]
    assert [{a["name"] for a in f["assertions"]} for f in gated] == [
        {"raw_data"},
        {"training_data"},
    ]
    outcome = train["run"]["facets"]["shelfguard_outcome"]
    assert outcome["outcome"] == "promoted"
    assert outcome["_schemaURL"].startswith(le.SCHEMA_BASE)
    assert train["run"]["facets"]["shelfguard_approval"]["approver"] == "alice"


def test_embedded_env_uses_the_file_transport_under_home(tmp_path: Path) -> None:
    from shelfguard.airflow.embedded import airflow_env
    from shelfguard.config import load_settings

    settings = load_settings({"SHELFGUARD_HOME": str(tmp_path)})
    env = airflow_env(settings, base={})
    config = json.loads(env["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert config["type"] == "file"
    assert config["log_file_path"] == str(settings.home / "lineage" / "events")
    assert env["AIRFLOW__OPENLINEAGE__NAMESPACE"] == le.JOB_NAMESPACE


def test_events_from_the_ledger_chain_refresh_to_model_to_index(
    sg_home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfguard.ledger import IngestFileRecord, open_ledger

    ledger = open_ledger(sg_home.ledger_url)
    refresh, retrain = "catalog_refresh/manual__1", "search_model_retraining/asset__1"
    # As start_run(publishes=True) opens a refresh run: with its candidate schema.
    ledger.start_run(
        refresh,
        "catalog_refresh",
        lineage={"batch_id": "b1", "marts_schema": "snapshot_" + "1" * 16},
    )
    ledger.land_batch("b1", [{"file_name": "products.csv", "sha256": "a" * 64}], run_id=refresh)
    ledger.record_ingested_file(
        IngestFileRecord(
            batch_id="b1",
            file_name="products.csv",
            table_name="products",
            sha256="a" * 64,
            bytes=10,
            rows_read=2,
            rows_accepted=2,
            rows_quarantined=0,
            run_id=refresh,
        )
    )
    ledger.record_gate(refresh, "raw_data", "pass", subject="batch:b1", checks=RAW.checks)
    ledger.record_gate(
        refresh,
        "dbt",
        "pass",
        subject="dim_products",
        checks=[{"name": "unique_product_id", "status": "pass", "column": "product_id"}],
    )
    ledger.record_snapshot(
        "snap1",
        schema_name="marts_snap1",
        fingerprint="f" * 64,
        run_id=refresh,
        batch_id="b1",
        tables={},
    )
    ledger.update_lineage(refresh, published_snapshot="snap1")
    ledger.finish_run(refresh, "OK")

    ledger.start_run(retrain, "search_model_retraining", lineage={"snapshot_id": "snap1"})
    ledger.record_gate(
        retrain, "training_data", "warn", subject="fct_training_pairs", checks=TRAINING.checks
    )
    ledger.record_gate(
        retrain,
        "evaluation",
        "pass",
        subject="model",
        checks=[{"name": "ndcg_at_10", "status": "pass"}],
    )
    ledger.record_artifact("model", "file:///m", "b" * 64, produced_by_run=retrain)
    ledger.record_artifact(
        "index", "file:///i", "c" * 64, produced_by_run=retrain, meta={"model_sha256": "b" * 64}
    )
    ledger.finish_run(retrain, "OK")

    from shelfguard.reports import build_report, write_report

    report = build_report(ledger, retrain)
    assert report["upstream"] == {
        "snapshot_id": "snap1",
        "catalog_refresh_run": refresh,
        "batches": ["b1"],
    }
    assert [f["file_name"] for f in report["inputs"]] == ["products.csv"]
    html = write_report(sg_home, ledger, retrain).read_text()
    assert f"catalog_refresh run <code>{refresh}</code>" in html

    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", openlineage_transport(sg_home.home))
    assert le.emit_run_lineage(sg_home, ledger, refresh) == 1
    assert le.emit_run_lineage(sg_home, ledger, retrain) == 2
    events = {e["job"]["name"]: e for e in _read_events(sg_home.home)}
    publish = events["catalog_refresh"]
    train = events["search_model_retraining.train"]
    embed = events["search_model_retraining.embed_catalog"]

    def ids(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(d["namespace"], d["name"]) for d in datasets}

    assert publish["inputs"][0]["name"] == str(sg_home.landing_dir / "products.csv")
    assert publish["inputs"][0]["facets"]["version"]["datasetVersion"] == "a" * 64
    # ingest -> marts -> model -> index
    assert ids(train["inputs"]) == ids(publish["outputs"])
    assert ids(train["outputs"]) == {(le.MODEL_NAMESPACE, "b" * 64)}
    assert (le.MODEL_NAMESPACE, "b" * 64) in ids(embed["inputs"])
    assert ids(embed["outputs"]) == {(le.INDEX_NAMESPACE, "c" * 64)}
    # One DataQualityAssertions facet per gate, each assertion a check.
    gate_names = {
        a["name"]
        for e in events.values()
        for d in e["inputs"] + e["outputs"]
        for a in d["facets"].get("dataQualityAssertions", {}).get("assertions", [])
    }
    assert gate_names == {"raw_data", "dbt", "training_data", "evaluation"}
    upstream = train["run"]["facets"]["shelfguard_upstream"]
    assert (upstream["catalog_refresh_run"], upstream["batches"]) == (refresh, ["b1"])
    assert train["run"]["facets"]["shelfguard_outcome"]["outcome"] == "OK"


def test_no_transport_means_no_events(sg_home: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIRFLOW__OPENLINEAGE__TRANSPORT", "OPENLINEAGE_URL", "OPENLINEAGE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert le.configured_client() is None


def test_a_broken_transport_never_fails_the_run(
    sg_home: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfguard.ledger import open_ledger

    ledger = open_ledger(sg_home.ledger_url)
    ledger.start_run("catalog_refresh/manual__2", "catalog_refresh", lineage={})
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__TRANSPORT", "{not json")
    assert le.emit_run_lineage(sg_home, ledger, "catalog_refresh/manual__2") == 0
