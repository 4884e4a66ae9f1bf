"""GateOperator: a blocking verdict fails the task without retry, a warning lets the run go on.

The operator is instantiated and executed with the part of the task context it reads;
the gate behind it is the real one, on a real ingested batch.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException

from shelfguard.airflow.operators import GateOperator
from shelfguard.config import project_root


def test_an_error_check_failing_fails_the_task(fresh_home: Any) -> None:
    fresh_home.land("schema_extra")
    operator = GateOperator(task_id="raw_data_gate", gate="raw_data")

    with pytest.raises(AirflowFailException, match=r"raw_data\.extra_columns\.products"):
        operator.execute(fresh_home.context("schema_extra"))

    results = fresh_home.ledger.gate_results(fresh_home.land("schema_extra"))
    assert [(g.gate, g.status) for g in results if g.gate == "raw_data"] == [("raw_data", "fail")]


def test_a_warning_only_verdict_lets_the_task_succeed(
    fresh_home: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = yaml.safe_load((project_root() / "governance.yml").read_text(encoding="utf-8"))
    policy["severities"] = {"raw_data.extra_columns": "warn"}
    relaxed = tmp_path / "governance.yml"
    relaxed.write_text(yaml.safe_dump(policy), encoding="utf-8")
    monkeypatch.setenv("SHELFGUARD_POLICY", str(relaxed))
    fresh_home.land("schema_extra")
    operator = GateOperator(task_id="raw_data_gate", gate="raw_data")

    result = operator.execute(fresh_home.context("schema_extra"))

    assert result["status"] == "warn"
    assert result["failed_checks"] == ["raw_data.extra_columns.products"]
    assert result["report_uri"].startswith("file://")


def test_the_gate_name_is_a_template_field() -> None:
    operator = GateOperator(task_id="gate", gate="{{ params.gate }}")

    assert "gate" in GateOperator.template_fields
    assert operator.gate == "{{ params.gate }}"


def test_importing_the_operators_stays_cheap_for_dag_parsing() -> None:
    heavy = ["great_expectations", "pandas", "duckdb", "shelfguard.gates", "shelfguard.quality"]
    code = f"import sys, shelfguard.airflow.operators\nprint([m for m in {heavy!r} if m in sys.modules])"

    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()

    assert loaded == "[]"
