"""catalog_refresh end to end: the CLI runs the real DAG on the embedded Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shelfguard.generator import generate

pytestmark = pytest.mark.airflow
CLI = str(Path(sys.executable).with_name("shelfguard"))


def shelfguard(home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env["SHELFGUARD_HOME"] = str(home)
    result = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=600)
    assert result.stdout.strip(), f"no output; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


def test_clean_data_runs_ok_and_is_recorded(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", products=300, seed=7)
    home = tmp_path / "home"
    code, outcome = shelfguard(
        home, "run", "catalog_refresh", "--source", str(data.out_dir), "--json"
    )
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    assert outcome["gates"] == [{"name": "ingest", "status": "pass"}]
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        loaded = con.execute("select count(*) from raw.products").fetchone()
        logged = con.execute("select count(*) from raw.search_log").fetchone()
    assert loaded == (data.rows["product"],)
    assert logged == (data.rows["search_log"],)

    code, status = shelfguard(home, "status", "--json")
    assert code == 0
    (run,) = status["runs"]
    assert run["run_id"] == outcome["run_id"]
    assert (run["dag_id"], run["outcome"]) == ("catalog_refresh", "OK")
    assert run["gates"] == [{"name": "ingest", "status": "pass"}]

    other_home = tmp_path / "other"
    code, status = shelfguard(other_home, "status", "--json")
    assert (code, status["runs"]) == (0, []), "two homes must never share state"


def test_missing_column_blocks_the_run_at_ingest(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", products=300, seed=7, defects=["schema_missing"])
    home = tmp_path / "home"
    code, outcome = shelfguard(
        home, "run", "catalog_refresh", "--source", str(data.out_dir), "--json"
    )
    assert code == 3
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", "ingest")
    assert "product_class" in outcome["message"]
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        tables = con.execute("select table_name from information_schema.tables").fetchall()
    assert tables == [], "a refused batch must leave nothing half-loaded"
