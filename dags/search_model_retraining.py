"""
### search_model_retraining

Retrains the product-search model when new gated marts are published (or
weekly), and lets the new model through only when it is measurably good.

1. **start** opens the run in the governance ledger, pins the policy and pins
   one published snapshot of the marts (the one the triggering Asset event names,
   else the current one): the run reads only that snapshot, whatever is published
   meanwhile.
2. **training_data_gate** re-checks that snapshot (leakage, k-anonymity, balance,
   drift) and that its fingerprint is still the pinned one.
3. **prepare_training** exports exactly that snapshot as parquet and writes the
   training config (overrides: the `train` param).
4. **train** fine-tunes the bi-encoder: a GPU pod in production, a local
   subprocess on the embedded default — the same `shelfguard_train` entry point.
5. **register_model** records the model's sha256 and lineage in the ledger.
6. **evaluate** ranks the whole catalog for every golden query with the
   challenger, the champion, the base model and BM25.
7. **evaluation_gate** applies the policy (floors, champion regression, first-run
   baselines, slices) and records the blessing bound to the model's sha256.
8. **embed_catalog** encodes every active product with the blessed challenger
   (GPU pod in production) into a new index; **index_gate** checks coverage,
   vectors, the model hash, ANN recall and canary queries.
9. **approval** — by policy (`auto`, embedded development only) or a person
   (`shelfguard approve`, or Airflow's Required Actions with the `hitl`
   backend); no answer before the timeout is a rejection.
10. **canary** (when `governance.yml → canary.required` and a champion exists)
   serves the approved pair to a share of shopping sessions; **online_gate** waits in
   the triggerer (no worker slot) for its impressions, then compares it with the
   champion on what shoppers did (docs/canary.md): a loser is taken out of the canary
   and the run ends BLOCKED at `online`.
11. **promote** re-reads the ledger (never task states) and moves the champion
   alias to (model, index) in one transaction.
12. **finalize** records the outcome (PROMOTED, BLOCKED, REJECTED or FAILED) and
   writes the governance report.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from shelfguard.airflow import tasks
from shelfguard.airflow.assets import DIM_PRODUCTS, FCT_GOLDEN_JUDGEMENTS, FCT_TRAINING_PAIRS
from shelfguard.airflow.launch import training_operator
from shelfguard.airflow.operators import GateOperator, OnlineGateOperator, approval_operator
from shelfguard.config import task_retry_delay

PREPARED = "ti.xcom_pull(task_ids='prepare_training')"
REGISTERED = "ti.xcom_pull(task_ids='register_model')"
INDEXING = "ti.xcom_pull(task_ids='prepare_index')"
#: How often the online gate's trigger counts the canary's impressions.
ONLINE_POLL_SECONDS = float(os.environ.get("SHELFGUARD_ONLINE_POLL_SECONDS", "30"))


@dag(
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * 1", timezone="UTC"),
        assets=(DIM_PRODUCTS & FCT_TRAINING_PAIRS & FCT_GOLDEN_JUDGEMENTS),
    ),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["shelfguard", "model", "training", "evaluation"],
    default_args={
        "owner": "ml-platform",
        "retries": 1,
        "retry_delay": task_retry_delay(timedelta(minutes=2)),
    },
    params={
        "train": Param({}, type="object", description='TrainConfig overrides, e.g. {"epochs": 2}.')
    },
    doc_md=__doc__,
)
def search_model_retraining() -> None:
    @task
    def start(**context: object) -> str:
        return tasks.start_run(context)

    @task
    def prepare_training(**context: object) -> dict[str, str]:
        return tasks.prepare_training(context)

    @task
    def register_model(**context: object) -> dict[str, str]:
        return tasks.register_model(context)

    @task
    def prepare_index(**context: object) -> dict[str, str]:
        return tasks.prepare_index(context)

    @task(retries=0)
    def canary(**context: object) -> dict[str, object]:
        return tasks.start_canary(context)

    @task(retries=0)
    def promote(**context: object) -> dict[str, object]:
        return tasks.promote(context)

    @task(trigger_rule="all_done", retries=0)
    def finalize(**context: object) -> str:
        return tasks.finalize(context)

    train = training_operator(
        "train",
        [
            "train",
            "--config",
            f"{{{{ {PREPARED}['train_config'] }}}}",
            "--result-out",
            f"{{{{ {PREPARED}['train_result'] }}}}",
        ],
        retries=0,
    )
    evaluate = training_operator(
        "evaluate", ["evaluate", "--config", f"{{{{ {REGISTERED}['eval_config'] }}}}"], retries=0
    )
    embed = training_operator(
        "embed_catalog",
        [
            "embed",
            "--config",
            f"{{{{ {INDEXING}['embed_config'] }}}}",
            "--result-out",
            f"{{{{ {INDEXING}['embed_result'] }}}}",
        ],
        retries=0,
    )
    approval = approval_operator("approval", retries=0)
    gate = GateOperator(task_id="training_data_gate", gate="training_data")
    evaluation_gate = GateOperator(task_id="evaluation_gate", gate="evaluation", retries=0)
    index_gate = GateOperator(task_id="index_gate", gate="index", retries=0)
    start() >> gate >> prepare_training() >> train >> register_model() >> evaluate
    evaluate >> evaluation_gate >> prepare_index() >> embed >> index_gate >> approval
    online = OnlineGateOperator(task_id="online_gate", retries=0, poll_seconds=ONLINE_POLL_SECONDS)
    approval >> canary() >> online >> promote() >> finalize()


search_model_retraining()
