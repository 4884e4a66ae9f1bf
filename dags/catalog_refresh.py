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
   The marts are built into the run's own candidate schema; staging reads only
   published batches and this run's batch (write-audit-publish).
5. **training_data_gate** checks the candidate: leakage, k-anonymity, balance, drift.
6. **publish** makes the gated candidate the published `marts` in one warehouse
   transaction, marks the batch published, and updates the marts Assets that
   `search_model_retraining` waits on (each event names the snapshot's id and
   fingerprint). A run blocked at any gate leaves the published marts untouched.
7. **prepare_index_refresh** — only when a champion exists — exports the
   catalog; **embed_catalog** re-encodes with the champion's model only the
   products that are new or changed and drops deleted ones (incremental);
   **index_gate** checks the new index; **approve_index** approves it by policy
   (or waits for a person, `approval.index_refresh`); **promote_index** moves the
   champion to (same model, new index) after re-checking the ledger.
8. **finalize** records the outcome from the ledger (OK, or BLOCKED at the gate
   that failed, or FAILED), marks a batch that was not published as blocked, drops
   an unpublished candidate and writes the governance report.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from shelfguard.airflow import tasks
from shelfguard.airflow.assets import MARTS
from shelfguard.airflow.cosmos import dbt_task_group
from shelfguard.airflow.launch import training_operator
from shelfguard.airflow.operators import GateOperator, approval_operator
from shelfguard.config import task_retry_delay

REFRESH = "ti.xcom_pull(task_ids='prepare_index_refresh')"


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["shelfguard", "catalog", "ingest", "dbt", "quality"],
    default_args={
        "owner": "data-engineering",
        "retries": 1,
        "retry_delay": task_retry_delay(timedelta(minutes=1)),
    },
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
        return tasks.start_run(context, publishes=True)

    @task
    def ingest(**context: object) -> dict[str, object]:
        return tasks.ingest(context)

    @task(outlets=list(MARTS))
    def publish(**context: object) -> dict[str, object]:
        return tasks.publish_marts(context)

    # Without a champion there is no index to refresh: skip the next four tasks only.
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def prepare_index_refresh(**context: object) -> dict[str, str] | None:
        return tasks.prepare_index_refresh(context)

    @task(retries=0)
    def promote_index(**context: object) -> dict[str, object]:
        return tasks.promote(context)

    @task(trigger_rule="all_done", retries=0)
    def finalize(**context: object) -> str:
        return tasks.finalize(context)

    raw_gate = GateOperator(task_id="raw_data_gate", gate="raw_data")
    training_gate = GateOperator(task_id="training_data_gate", gate="training_data")
    index_gate = GateOperator(task_id="index_gate", gate="index", retries=0)
    embed = training_operator(
        "embed_catalog",
        [
            "embed",
            "--config",
            f"{{{{ {REFRESH}['embed_config'] }}}}",
            "--result-out",
            f"{{{{ {REFRESH}['embed_result'] }}}}",
        ],
        retries=0,
    )
    approve = approval_operator("approve_index", index_refresh=True, retries=0)
    published = publish()
    start() >> ingest() >> raw_gate >> dbt_task_group() >> training_gate >> published
    promoted = promote_index()
    published >> prepare_index_refresh() >> embed >> index_gate >> approve >> promoted
    [published, promoted] >> finalize()


catalog_refresh()
