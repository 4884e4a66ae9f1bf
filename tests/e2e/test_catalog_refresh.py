"""catalog_refresh end to end: the CLI runs the real DAG (Airflow, dbt via Cosmos, GX) embedded.

One test per defect the generator can inject: each ends the run BLOCKED at the
gate that owns it, with the failed check named, and nothing downstream ran.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shelfguard.data.generator import generate

pytestmark = pytest.mark.airflow
CLI = str(Path(sys.executable).with_name("shelfguard"))
PRODUCTS = 400

# defect -> (gate that must block, a check name that must be among the failed ones)
RAW_DEFECTS = {
    "duplicate_ids": ("raw_data", "raw_products.product_id_unique"),
    "empty_names": ("raw_data", "raw_products.product_name_present"),
    "bad_numbers": ("raw_data", "raw_data.quarantine_share.products"),
    "out_of_range": ("raw_data", "raw_products.average_rating_in_range"),
    "schema_extra": ("raw_data", "raw_data.extra_columns.products"),
    "bad_utf8": ("raw_data", "raw_data.quarantine_share.products"),
    "ragged_rows": ("raw_data", "raw_data.quarantine_share.products"),
    "orphan_judgements": ("raw_data", "raw_judgements.product_id_known"),
    "schema_missing": ("ingest", "file_contract"),
    "schema_renamed": ("ingest", "file_contract"),
}


def shelfguard(home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env["SHELFGUARD_HOME"] = str(home)
    result = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=900)
    assert result.stdout.strip(), f"no output; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


def refresh(home: Path, source: Path) -> tuple[int, dict[str, Any]]:
    return shelfguard(home, "run", "catalog_refresh", "--source", str(source), "--json")


def asset_events(home: Path) -> int:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        (count,) = db.execute(
            "SELECT count(*) FROM asset_event JOIN asset ON asset.id = asset_event.asset_id "
            "WHERE asset.name LIKE 'shelfguard.marts.%'"
        ).fetchone()
    return int(count)


def mart_tables(home: Path) -> list[str]:
    path = home / "warehouse.duckdb"
    if not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute(
            "select table_name from information_schema.tables where table_schema = 'marts' order by 1"
        ).fetchall()
    return [r[0] for r in rows]


def failed_checks(home: Path, run_id: str, gate: str) -> list[str]:
    code, report = shelfguard(home, "report", run_id, "--json")
    assert code == 0
    (entry,) = [g for g in report["gates"] if g["gate"] == gate and g["status"] == "fail"]
    return list(entry["failed_checks"])


@pytest.fixture(scope="module")
def clean_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("clean")
    data = generate(root / "data", products=PRODUCTS, seed=11)
    home = root / "home"
    code, outcome = refresh(home, data.out_dir)
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    return home, outcome


def test_clean_data_passes_every_gate_and_publishes_the_marts(
    clean_home: tuple[Path, dict[str, Any]],
) -> None:
    home, outcome = clean_home
    gates = {(g["name"], g["status"]) for g in outcome["gates"]}
    assert {("ingest", "pass"), ("raw_data", "pass"), ("training_data", "pass")} <= gates
    assert ("dbt", "pass") in gates and ("dbt", "fail") not in gates
    assert {"dim_products", "fct_training_pairs", "fct_golden_judgements"} <= set(mart_tables(home))
    assert asset_events(home) == 3, "the three marts Assets are updated once"

    code, status = shelfguard(home, "status", "--json")
    assert code == 0
    (run,) = status["runs"]
    assert (run["run_id"], run["outcome"]) == (outcome["run_id"], "OK")
    assert ("raw_data", "pass") in {(g["name"], g["status"]) for g in run["gates"]}

    code, other = shelfguard(home.parent / "other-home", "status", "--json")
    assert (code, other["runs"]) == (0, []), "two homes must never share state"


@pytest.mark.spread
@pytest.mark.parametrize("defect", sorted(RAW_DEFECTS))
def test_each_raw_defect_blocks_at_its_gate(tmp_path: Path, defect: str) -> None:
    gate, check = RAW_DEFECTS[defect]
    data = generate(tmp_path / "data", products=PRODUCTS, seed=11, defects=[defect])
    home = tmp_path / "home"
    code, outcome = refresh(home, data.out_dir)
    assert code == 3, outcome
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", gate)
    assert check in failed_checks(home, outcome["run_id"], gate)
    assert check.split(".")[-1] in outcome["message"] or check in outcome["message"]
    assert mart_tables(home) == [], "dbt must not run after a blocked data gate"
    assert asset_events(home) == 0, "Assets must not be updated by a blocked run"


@pytest.mark.spread
def test_golden_leak_blocks_at_the_training_data_gate(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", products=PRODUCTS, seed=11, defects=["golden_leak"])
    home = tmp_path / "home"
    code, outcome = refresh(home, data.out_dir)
    assert code == 3, outcome
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", "training_data")
    assert "training_pairs.no_golden_query_leak" in failed_checks(
        home, outcome["run_id"], "training_data"
    )
    assert asset_events(home) == 0


def test_category_shift_against_the_last_accepted_snapshot_blocks(
    clean_home: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    home, _ = clean_home
    before = asset_events(home)
    shifted = generate(tmp_path / "data", products=PRODUCTS, seed=12, defects=["category_shift"])
    code, outcome = refresh(home, shifted.out_dir)
    assert code == 3, outcome
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", "training_data")
    assert "training_data.category_drift" in failed_checks(home, outcome["run_id"], "training_data")
    assert asset_events(home) == before, "a blocked run does not publish"


@pytest.mark.spread
def test_blocked_report_names_the_expectation_and_shows_offending_rows(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", products=PRODUCTS, seed=11, defects=["duplicate_ids"])
    home = tmp_path / "home"
    _, outcome = refresh(home, data.out_dir)
    html = Path(outcome["report"]).read_text(encoding="utf-8")
    assert "BLOCKED at gate raw_data" in html
    assert "raw_products.product_id_unique" in html
    assert "Sample offending rows" in html
    _, report = shelfguard(home, "report", outcome["run_id"], "--json")
    (check,) = [
        c
        for g in report["gates"]
        for c in g["checks"]
        if c["name"] == "raw_products.product_id_unique"
    ]
    shown = {str(row["product_id"]) for row in check["sample_rows"]}
    assert shown, "the failed check carries sample rows"
    assert shown <= _duplicated_ids(data.files["product"]), "the rows shown really are duplicates"
    for product_id in shown:
        assert f"<code>{product_id}</code>" in html


def _duplicated_ids(product_file: Path) -> set[str]:
    seen: set[str] = set()
    duplicated: set[str] = set()
    for line in product_file.read_bytes().split(b"\n")[1:]:
        key = line.split(b"\t", 1)[0].decode()
        (duplicated if key in seen else seen).add(key)
    return duplicated


def test_next_week_of_the_same_store_lands_after_the_first(
    clean_home: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Week 2 of seed 11 on the home that published week 1: its searches add to week 1's
    (no id collides), and the catalog published is week 2's (week 1's with its change
    feed applied) with the change feed delivered with it applied."""
    home, _ = clean_home
    week2 = generate(tmp_path / "week-2", products=PRODUCTS, seed=11, week=2)
    code, outcome = refresh(home, week2.out_dir)
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    week1 = generate(tmp_path / "week-1", products=PRODUCTS, seed=11)
    searches = {
        line.split(b"\t", 1)[0]
        for result in (week1, week2)
        for line in result.files["search_log"].read_bytes().split(b"\n")[1:]
        if line
    }
    listed = {
        int(line.split(b"\t", 1)[0])
        for line in week2.files["product"].read_bytes().split(b"\n")[1:]
        if line
    }
    for line in week2.files["catalog_changes"].read_bytes().split(b"\n")[1:]:
        if line:
            _, _, op, product_id = line.split(b"\t")[:4]
            (listed.discard if op == b"delete" else listed.add)(int(product_id))
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        (logged,) = con.execute("select count(distinct search_id) from raw.search_log").fetchone()
        products = {
            r[0]
            for r in con.execute(
                "select product_id from marts.dim_products where is_active"
            ).fetchall()
        }
    assert logged == len(searches)
    assert products == listed
