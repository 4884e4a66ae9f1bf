"""
### catalog_refresh

Lands new catalog, judgement and behaviour files, cleans them with dbt and
publishes the marts, only when every data gate passed.

1. **start** opens the run in the governance ledger (code version, policy hash).
2. **ingest** loads the source folder (the `source` param, else
   `$SHELFGUARD_LANDING_DIR`) into `raw.*`; unparseable rows go to
   `quarantine.*` with a reason and their original bytes; the batch manifest goes
   to the ledger. A file that breaks the contract blocks the run (gate `ingest`).
3. **raw_data_gate** runs the Great Expectations suites on the batch and the
   policy's limits (quarantine share, duplicates, empty fields, drift...).
4. **dbt** (Cosmos): staging, intermediate and marts, one task per model with
   its tests after it; a failing test stops everything downstream of it.
5. **training_data_gate** checks the marts: leakage, k-anonymity, balance, drift.
6. **publish** updates the marts Assets that `search_model_retraining` waits on.
7. **finalize** records the outcome from the ledger (OK, or BLOCKED at the gate
   that failed, or FAILED) and writes the governance report.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from shelfguard import tasks
from shelfguard.assets import MARTS
from shelfguard.cosmos_dbt import dbt_task_group
from shelfguard.operators import GateOperator


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["shelfguard", "catalog", "ingest", "dbt", "quality"],
    default_args={"owner": "data-engineering", "retries": 1, "retry_delay": timedelta(minutes=1)},
    params={
        "source": Param(
            None,
            type=["null", "string"],
            description="Folder with WANDS-layout files; default: the landing folder.",
        )
    },
    doc_md=__doc__,
)
def catalog_refresh() -> None:
    @task
    def start(**context: object) -> str:
        return tasks.start_run(context)

    @task
    def ingest(**context: object) -> dict[str, object]:
        return tasks.ingest(context)

    @task(outlets=list(MARTS))
    def publish(**context: object) -> list[str]:
        return tasks.publish_marts(context)

    @task(trigger_rule="all_done", retries=0)
    def finalize(**context: object) -> str:
        return tasks.finalize(context)

    raw_gate = GateOperator(task_id="raw_data_gate", gate="raw_data")
    training_gate = GateOperator(task_id="training_data_gate", gate="training_data")
    published = publish()
    start() >> ingest() >> raw_gate >> dbt_task_group() >> training_gate >> published
    published >> finalize()


catalog_refresh()
