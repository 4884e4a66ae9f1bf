"""Task bodies: what each Airflow task of the shelfguard DAGs does, one function per task.

DAG files only wire these together. Each function takes the Airflow context,
does its work through the package's plain functions, records what happened in
the ledger, and stops the run with :class:`AirflowFailException` (no retry)
when the result is a governance decision rather than a transient error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from upath import UPath

from shelfguard.config import Settings, load_settings
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.lineage import code_version, ledger_run_id
from shelfguard.policy import load_policy

FAILED = "failed"
NOT_RUN = {"upstream_failed", "skipped", "removed", None}


def _run_ids(context: Mapping[str, Any]) -> tuple[str, str]:
    dag_id = str(context["dag"].dag_id)
    return ledger_run_id(dag_id, str(context["run_id"])), dag_id


def _conf(context: Mapping[str, Any]) -> dict[str, Any]:
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return dict(conf)


def start_run(context: Mapping[str, Any]) -> str:
    """Open the run in the ledger with what it runs on (code version, policy hash, request id)."""
    settings = load_settings()
    settings.ensure_dirs()
    run_id, dag_id = _run_ids(context)
    conf = _conf(context)
    policy = load_policy()
    ledger = open_ledger(settings.ledger_url)
    dag_run = context.get("dag_run")
    ledger.start_run(
        run_id,
        dag_id,
        triggered_by=conf.get("triggered_by")
        or getattr(dag_run, "triggering_user_name", None)
        or os.environ.get("USER"),
        lineage={
            "code_version": code_version(),
            "request_id": conf.get("request_id"),
            "policy_sha256": policy.sha256,
        },
    )
    # dbt reads k from here at run time; the DAG never reads the policy while parsing.
    context["ti"].xcom_push(key="k_anonymity", value=policy.privacy.k_anonymity)
    return run_id


def source_dir(context: Mapping[str, Any], settings: Settings) -> Path:
    """The folder to ingest: the run's ``source`` param, else the landing folder."""
    params = context.get("params") or {}
    source = _conf(context).get("source") or params.get("source")
    return Path(source) if source else settings.landing_dir


def ingest(context: Mapping[str, Any]) -> dict[str, Any]:
    """Load the source folder into ``raw.*`` and record the manifest and the ``ingest`` gate."""
    from shelfguard.ingest import IngestError
    from shelfguard.ingest import ingest as run_ingest

    settings = load_settings()
    run_id, _ = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    source = source_dir(context, settings)
    try:
        manifest = run_ingest(source, settings.warehouse_url, ledger, run_id=run_id)
    except IngestError as exc:
        ledger.record_gate(
            run_id,
            "ingest",
            "fail",
            checks=[
                {
                    "name": "file_contract",
                    "status": "fail",
                    "severity": "error",
                    "message": str(exc),
                }
            ],
        )
        raise AirflowFailException(f"ingest refused the batch: {exc}") from exc
    files = manifest.to_dict()["files"]
    ledger.update_lineage(
        run_id,
        batch_id=manifest.batch_id,
        inputs={f["file_name"]: f["sha256"] for f in files},
    )
    ledger.record_gate(
        run_id,
        "ingest",
        "pass",
        subject=f"batch:{manifest.batch_id}",
        checks=[
            {
                "name": f"rows_conserved:{f['file_name']}",
                "status": "pass",
                "severity": "error",
                "observed": f"{f['rows_read']} read = {f['rows_accepted']} accepted"
                f" + {f['rows_quarantined']} quarantined",
            }
            for f in files
        ],
        metrics={"files": files},
    )
    return manifest.to_dict()


def publish_marts(context: Mapping[str, Any]) -> list[str]:
    """Announce the marts (the task's outlets) once every data gate passed; record it."""
    from shelfguard.assets import MARTS

    settings = load_settings()
    run_id, _ = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    names = [asset.name for asset in MARTS]
    ledger.update_lineage(run_id, published_assets=names)
    return names


def prepare_training(context: Mapping[str, Any]) -> dict[str, str]:
    """Export the gated marts as parquet and write the run's training config."""
    from shelfguard import modeling

    settings = load_settings()
    run_id, _ = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    export = modeling.export_training_data(settings, modeling.training_snapshot(ledger, run_id))
    overrides = dict((context.get("params") or {}).get("train") or {})
    config = modeling.write_train_config(settings, run_id, export, overrides)
    ledger.update_lineage(run_id, training_data=str(export.data_dir), training_rows=export.rows)
    return {
        "train_config": str(config),
        "train_result": str(modeling.run_dir(settings, run_id) / "train_result.json"),
        "data_dir": str(export.data_dir),
    }


def register_model(context: Mapping[str, Any]) -> dict[str, str]:
    """Record the trained model's bytes in the ledger and write the evaluation config."""
    from shelfguard import modeling

    settings = load_settings()
    run_id, _ = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    artifact = modeling.register_model(settings, ledger, run_id)
    prepared = context["ti"].xcom_pull(task_ids="prepare_training")
    config = modeling.write_eval_config(
        settings,
        ledger,
        run_id,
        UPath(prepared["data_dir"]),
        precision=load_policy().index.precision,
    )
    return {"model_sha256": artifact.sha256, "eval_config": str(config)}


def evaluation_gate(context: Mapping[str, Any]) -> dict[str, Any]:
    """Bless the challenger, bound to its sha256, or block the run at the evaluation gate."""
    from shelfguard import modeling

    settings = load_settings()
    run_id, _ = _run_ids(context)
    gate = modeling.run_evaluation_gate(
        settings, load_policy(), open_ledger(settings.ledger_url), run_id
    )
    failed = [c["name"] for c in gate.checks if c["status"] == "fail"]
    if gate.status == "fail":
        raise AirflowFailException(f"evaluation gate blocked the model: {', '.join(failed)}")
    return {"status": gate.status, "subject": gate.subject, "metrics": gate.metrics["overall"]}


def prepare_index(context: Mapping[str, Any]) -> dict[str, str]:
    """Write the config of a full catalog embedding with the blessed challenger."""
    from shelfguard import indexing, modeling

    settings = load_settings()
    run_id, _ = _run_ids(context)
    result = modeling.read_json(
        modeling.run_dir(settings, run_id) / "train_result.json", "training result"
    )
    prepared = context["ti"].xcom_pull(task_ids="prepare_training")
    export = modeling.DatasetExport(
        snapshot_id=str(result["data_snapshot_id"]), data_dir=UPath(prepared["data_dir"]), rows={}
    )
    config = indexing.write_embed_config(
        settings, run_id, export, str(result["model_dir"]), precision=load_policy().index.precision
    )
    _, _, result_path = indexing.embed_paths(settings, run_id)
    return {"embed_config": str(config), "embed_result": str(result_path)}


def prepare_index_refresh(context: Mapping[str, Any]) -> dict[str, str] | None:
    """With a champion: write the config of an incremental refresh of its index, else skip.

    Only products that are new or whose text changed are encoded again, with the
    champion's own model; deleted products are dropped.
    """
    from shelfguard import indexing, modeling

    settings = load_settings()
    run_id, _ = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    champion = ledger.get_alias("champion")
    if champion is None:
        ledger.update_lineage(run_id, index_refresh="skipped: no champion yet")
        return None
    snapshot = modeling.training_snapshot(ledger, run_id)
    export = modeling.export_training_data(settings, snapshot)
    config = indexing.write_embed_config(
        settings,
        run_id,
        export,
        champion.model.uri,
        previous_index_dir=champion.index.uri,
        precision=load_policy().index.precision,
    )
    ledger.update_lineage(
        run_id,
        data_snapshot_id=snapshot,
        model_sha256=champion.model.sha256,
        previous_index_sha256=champion.index.sha256,
    )
    _, _, result_path = indexing.embed_paths(settings, run_id)
    return {"embed_config": str(config), "embed_result": str(result_path)}


def index_gate(context: Mapping[str, Any]) -> dict[str, Any]:
    """Register the run's index and gate it; a failure blocks the run at the index gate."""
    from shelfguard import indexing

    settings = load_settings()
    run_id, _ = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    run = ledger.get_run(run_id)
    model_sha = str((run.lineage if run else {}).get("model_sha256") or "")
    gate = indexing.run_index_gate(settings, load_policy().index, ledger, run_id, model_sha)
    failed = [c["name"] for c in gate.checks if c["status"] == "fail"]
    if gate.status == "fail":
        raise AirflowFailException(f"index gate blocked the index: {', '.join(failed)}")
    return {"status": gate.status, "subject": gate.subject, "metrics": gate.metrics}


def promote(context: Mapping[str, Any]) -> dict[str, Any]:
    """Move the champion alias to the run's (model, index) if the ledger holds every proof."""
    from shelfguard.promotion import PromotionRefused
    from shelfguard.promotion import promote as move_champion

    settings = load_settings()
    run_id, dag_id = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    try:
        alias = move_champion(ledger, load_policy(), run_id)
    except PromotionRefused as exc:
        ledger.update_lineage(run_id, promotion_refused=exc.missing)
        raise AirflowFailException(str(exc)) from exc
    kind = "index" if dag_id == "catalog_refresh" else "model"
    ledger.update_lineage(run_id, promoted_version=alias.version, promoted=kind)
    return {
        "version": alias.version,
        "model_sha256": alias.model.sha256,
        "index_sha256": alias.index.sha256,
    }


def finalize(context: Mapping[str, Any]) -> str:
    """Decide the run's outcome from the ledger and the tasks' states, and record it.

    A failed gate makes the run BLOCKED at that gate; any other failed task makes
    it FAILED. The task itself then fails, so Airflow shows the run as failed too.
    """
    settings = load_settings()
    run_id, dag_id = _run_ids(context)
    ledger = open_ledger(settings.ledger_url)
    try:
        return _decide(ledger, context, run_id, dag_id)
    finally:
        from shelfguard.reports import write_report

        write_report(settings, ledger, run_id)


def _decide(ledger: Ledger, context: Mapping[str, Any], run_id: str, dag_id: str) -> str:
    failed_gates = [g for g in ledger.gate_results(run_id) if g.status == "fail"]
    ti = context["ti"]
    airflow_run_id = str(context["run_id"])
    states = ti.get_task_states(dag_id=dag_id, run_ids=[airflow_run_id]).get(airflow_run_id, {})
    failed_tasks = sorted(t for t, s in states.items() if s == FAILED and t != ti.task_id)
    not_run = sum(1 for t, s in states.items() if s in NOT_RUN and t != ti.task_id)
    if failed_gates:
        gate = failed_gates[0]
        reasons = "; ".join(
            f"{c.get('name')}: {c.get('message') or c.get('observed')}"
            for c in gate.checks
            if c.get("status") == "fail"
        )
        ledger.finish_run(run_id, "BLOCKED", blocked_gate=gate.gate, message=reasons)
        raise AirflowFailException(f"BLOCKED at gate {gate.gate}: {reasons}")
    rejection = _rejection(ledger, run_id)
    if rejection:
        ledger.finish_run(run_id, "REJECTED", message=rejection)
        raise AirflowFailException(f"REJECTED: {rejection}")
    if failed_tasks:
        message = f"task(s) failed: {', '.join(failed_tasks)}"
        if not_run:
            message += f"; {not_run} task(s) downstream did not run"
        ledger.finish_run(run_id, "FAILED", message=message)
        raise AirflowFailException(f"FAILED: {message}")
    run = ledger.get_run(run_id)
    lineage = run.lineage if run else {}
    if lineage.get("promoted") == "model":
        promoted = f"champion v{lineage['promoted_version']}: this run's model and index"
        ledger.finish_run(run_id, "PROMOTED", message=promoted)
        return "PROMOTED"
    refreshed = None
    if lineage.get("promoted") == "index":
        refreshed = f"champion index refreshed (v{lineage['promoted_version']})"
    ledger.finish_run(run_id, "OK", message=refreshed)
    return "OK"


def _rejection(ledger: Ledger, run_id: str) -> str | None:
    """Why the run's pair was rejected, if its latest decision is a rejection."""
    decisions = ledger.approvals(run_id)
    if not decisions or decisions[-1].decision != "rejected":
        return None
    latest = decisions[-1]
    return f"rejected by {latest.decided_by} via {latest.via}: {latest.comment or '-'}"
