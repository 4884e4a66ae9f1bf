"""dbt inside the DAGs through astronomer-cosmos: one task per model, its tests after it.

Cosmos renders the task group from ``dbt_project/target/manifest.json`` (no
``dbt ls`` at parse time) and runs each node in local execution mode. A failing
dbt test fails its task, so the models downstream of it never run. After every
dbt command, :func:`record_dbt_results` writes the node results to the ledger
as the ``dbt`` gate, so the governance report lists every model and test.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from shelfguard.config import load_settings
from shelfguard.data.dbt_project import dbt_env, dbt_target, manifest_path, project_dir
from shelfguard.lineage import ledger_run_id

DBT_GATE = "dbt"
#: XCom keys the ``start`` task pushes for dbt: the pinned policy's k, the batch this
#: build is a candidate for, and the schema its marts are built in.
K_ANONYMITY_XCOM = "k_anonymity"
CANDIDATE_BATCH_XCOM = "candidate_batch"
MARTS_SCHEMA_XCOM = "marts_schema"

# A governance product makes no outside calls (Cosmos reads this when it is imported).
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")


def _dbt_executable() -> str:
    beside_python = Path(sys.executable).with_name("dbt")
    return str(beside_python) if beside_python.exists() else shutil.which("dbt") or "dbt"


def record_dbt_results(project_dir: str, context: Any = None, **_: Any) -> None:
    """Cosmos callback: record the node results of one dbt command as a ``dbt`` gate row
    (:mod:`shelfguard.gates.dbt`)."""
    from shelfguard.gates import run_gate

    results_path = Path(project_dir) / "target" / "run_results.json"
    if context is None or not results_path.is_file():
        return
    results = json.loads(results_path.read_text(encoding="utf-8")).get("results", [])
    if not results:
        return
    run_id = ledger_run_id(str(context["dag"].dag_id), str(context["run_id"]))
    run_gate(DBT_GATE, run_id, evidence={"results": results, "subject": str(context["ti"].task_id)})


def _pull(task_id: str, key: str) -> str:
    return f"{{{{ ti.xcom_pull(task_ids='{task_id}', key='{key}') }}}}"


def dbt_task_group(group_id: str = "dbt") -> Any:
    """The Cosmos ``DbtTaskGroup`` of the whole project (call inside a DAG)."""
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import (
        ExecutionMode,
        InvocationMode,
        LoadMode,
        TestBehavior,
        TestIndirectSelection,
    )

    settings = load_settings()
    return DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            dbt_project_path=project_dir(),
            manifest_path=manifest_path(),
            install_dbt_deps=False,
        ),
        profile_config=ProfileConfig(
            profile_name="shelfguard",
            target_name=dbt_target(settings),
            profiles_yml_filepath=project_dir() / "profiles.yml",
        ),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            # A dbt subprocess per task: dbt-duckdb would otherwise keep the warehouse file
            # open in the worker process, and dbt's global state would leak between tasks.
            invocation_mode=InvocationMode.SUBPROCESS,
            dbt_executable_path=_dbt_executable(),
            # A test that reads two models runs once both exist (see the detached tasks below).
            test_indirect_selection=TestIndirectSelection.CAUTIOUS,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            # One task per model: `dbt build` runs the model, then its tests; a failing test fails
            # the task, so nothing downstream of it runs.
            test_behavior=TestBehavior.BUILD,
            should_detach_multiple_parents_tests=True,
            # Models land in a candidate schema: an Asset event is emitted only when the
            # marts are published (the `publish` task), never for an unpublished table.
            # (A RenderConfig setting: Cosmos overrides the operator argument with it.)
            emit_datasets=False,
        ),
        operator_args={
            "install_deps": False,
            # The database password stays in the workers' environment, never in task args;
            # the pseudonymisation key is blanked, so dbt never inherits it from the worker.
            "env": dbt_env(settings, secrets=False),
            # Known at run time only, never read while parsing the DAG: the pinned policy's
            # k, the batch this build is a candidate for (staging reads it besides the
            # published ones) and the run's candidate schema for the marts.
            "vars": {
                K_ANONYMITY_XCOM: _pull("start", K_ANONYMITY_XCOM),
                CANDIDATE_BATCH_XCOM: _pull("ingest", CANDIDATE_BATCH_XCOM),
                MARTS_SCHEMA_XCOM: _pull("start", MARTS_SCHEMA_XCOM),
            },
            "callback": record_dbt_results,
            # The compiled SQL is dbt's to keep (its target folder); the metadata database
            # holds no copy of it.
            "should_store_compiled_sql": False,
            "retries": 0,
        },
    )
