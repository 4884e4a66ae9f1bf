"""
### catalog_refresh

Lands new catalog, judgement and behaviour files in the warehouse.

1. **start** opens the run in the governance ledger (code version, request id).
2. **ingest** loads the source folder (the `source` param, else
   `$SHELFGUARD_LANDING_DIR`) into `raw.*`; rows that cannot be parsed go to
   `quarantine.*` with a reason and their original bytes, and the batch manifest
   (file sha256, rows read / accepted / quarantined) goes to the ledger. A file
   that breaks the contract (missing column, empty, unreadable) blocks the run
   at the `ingest` gate.
3. **finalize** records the outcome from the ledger: OK, BLOCKED (gate named)
   or FAILED.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import Param, dag, task

from shelfguard import tasks


@dag(
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["shelfguard", "catalog", "ingest"],
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

    @task(trigger_rule="all_done", retries=0)
    def finalize(**context: object) -> str:
        return tasks.finalize(context)

    start() >> ingest() >> finalize()


catalog_refresh()
