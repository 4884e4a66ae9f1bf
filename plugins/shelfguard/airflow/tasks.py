"""Task bodies: what each Airflow task of the shelfguard DAGs does, one function per task.

DAG files only wire these together. Each function takes the Airflow context,
builds the run's :class:`~shelfguard.run_context.RunContext` once (settings, ledger,
the policy pinned when the run started), does its work through the package's plain
functions, records what happened in the ledger, and stops the run with
:class:`AirflowFailException` (no retry) when the result is a governance decision
rather than a transient error.

Write-audit-publish (invariant 9): ``catalog_refresh`` lands a batch, gates it, builds
the marts into the run's candidate schema, gates the candidate and only then publishes
it (:func:`publish_marts`); ``search_model_retraining`` pins one published snapshot at
its start and reads only that snapshot to the end.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException
from upath import UPath

from shelfguard.config import Settings, load_settings
from shelfguard.data.publication import PublishedSnapshot, builds_candidate
from shelfguard.failpoints import failpoint
from shelfguard.ledger import AliasRecord, Ledger, SnapshotRecord, open_ledger
from shelfguard.lineage import code_version, ledger_run_id
from shelfguard.policy import Policy
from shelfguard.run_context import RunContext, RunContextError, pin_policy, trigger_identity

FAILED = "failed"
NOT_RUN = {"upstream_failed", "skipped", "removed", None}


def _run_ids(context: Mapping[str, Any]) -> tuple[str, str]:
    dag_id = str(context["dag"].dag_id)
    return ledger_run_id(dag_id, str(context["run_id"])), dag_id


def _conf(context: Mapping[str, Any]) -> dict[str, Any]:
    dag_run = context.get("dag_run")
    conf = getattr(dag_run, "conf", None) or {}
    return dict(conf)


def start_run(context: Mapping[str, Any], *, publishes: bool = False) -> str:
    """Open the run in the ledger: code version, request id, and the policy, pinned.

    The policy file is read here and nowhere else in the run: its bytes go to the ledger
    under their sha256 and every later task parses them from there. A run that
    ``publishes`` (``catalog_refresh``) is given its candidate schema; any other run pins
    the published snapshot it will read from start to end. Later tasks tell the two
    apart by the run's lineage (:func:`~shelfguard.data.publication.builds_candidate`).
    """
    from shelfguard.airflow.cosmos import K_ANONYMITY_XCOM, MARTS_SCHEMA_XCOM
    from shelfguard.data import publication

    settings = load_settings()
    settings.ensure_dirs()
    run_id, dag_id = _run_ids(context)
    conf = _conf(context)
    ledger = open_ledger(settings.ledger_url)
    from shelfguard.policy_approval import PolicyApprovalError

    try:
        policy = pin_policy(ledger, settings.home)
    except PolicyApprovalError as exc:
        raise AirflowFailException(f"the run refuses its policy: {exc}") from exc
    lineage: dict[str, Any] = {
        "code_version": code_version(),
        "request_id": conf.get("request_id"),
        "policy_sha256": policy.sha256,
    }
    from shelfguard.liveness import EMBEDDED_RUNNER, RUN_LOCK_ENV

    recovered = recover(settings, ledger)
    if recovered:
        lineage["recovered_snapshots"] = recovered
    if os.environ.get(RUN_LOCK_ENV):
        lineage["runner"] = EMBEDDED_RUNNER
    if publishes:
        lineage["marts_schema"] = publication.snapshot_schema(run_id)
    else:
        lineage.update(_pin_snapshot(context, settings, ledger))
    ledger.start_run(
        run_id,
        dag_id,
        triggered_by=trigger_identity(context),
        lineage=lineage,
    )
    # dbt reads these at run time; the DAG never reads the policy while parsing.
    context["ti"].xcom_push(key=K_ANONYMITY_XCOM, value=policy.privacy.k_anonymity)
    context["ti"].xcom_push(key=MARTS_SCHEMA_XCOM, value=lineage.get("marts_schema"))
    return run_id


def recover(settings: Settings, ledger: Ledger) -> list[str]:
    """What every run does first: mark runs whose process died ``ABANDONED``, and record
    in the ledger the snapshots a process published before it died (the warehouse had
    committed, the ledger was not told). Returns the snapshot ids recovered."""
    from shelfguard.data import publication
    from shelfguard.liveness import reap_abandoned

    reap_abandoned(settings, ledger)
    return publication.reconcile(settings, ledger)


def _pin_snapshot(context: Mapping[str, Any], settings: Settings, ledger: Ledger) -> dict[str, Any]:
    """The published snapshot a retraining run reads: the one its triggering Asset event
    names, else the current one. Refuses to start without any."""
    from shelfguard.data import publication

    named = None
    events = context.get("triggering_asset_events") or {}
    for asset_events in getattr(events, "values", lambda: [])():
        for event in asset_events or []:
            extra = getattr(event, "extra", None) or {}
            named = extra.get("snapshot_id") or named
    snapshot: SnapshotRecord | publication.PublishedSnapshot | None = (
        ledger.get_snapshot(str(named)) if named else None
    ) or publication.current_snapshot(settings)
    if snapshot is None:
        raise AirflowFailException(
            "no published marts yet: run catalog_refresh first (retraining reads only "
            "published, gated snapshots)"
        )
    return {
        "snapshot_id": snapshot.snapshot_id,
        "marts_schema": snapshot.schema_name,
        "snapshot_fingerprint": snapshot.fingerprint,
    }


def source_dir(context: Mapping[str, Any], settings: Settings) -> Path:
    """The folder to ingest: the run's ``source`` param, else the landing folder."""
    params = context.get("params") or {}
    source = _conf(context).get("source") or params.get("source")
    return Path(source) if source else settings.landing_dir


def land_source(
    settings: Settings, ledger: Ledger, run_id: str, policy: Policy, source: Path
) -> dict[str, Any]:
    """Purge quarantined personal data past its retention, load ``source`` into ``raw.*``
    and land the batch: the :func:`ingest` task without Airflow. Returns the manifest.

    Raises :class:`~shelfguard.data.ingest.IngestError` when the batch is refused.
    """
    from shelfguard.data import publication
    from shelfguard.data.ingest import ingest as run_ingest
    from shelfguard.data.ingest import purge_expired_quarantine

    # First, so that a refused batch does not keep expired personal data any longer.
    purge_expired_quarantine(
        settings.warehouse_url, ledger, policy.privacy.raw_retention_days, run_id=run_id
    )
    manifest = run_ingest(source, settings.warehouse_url, ledger, run_id=run_id)
    files = manifest.to_dict()["files"]
    ledger.update_lineage(
        run_id,
        batch_id=manifest.batch_id,
        inputs={f["file_name"]: f["sha256"] for f in files},
    )
    publication.land(settings, ledger, manifest.batch_id, files, run_id=run_id)
    return manifest.to_dict()


def ingest(context: Mapping[str, Any]) -> dict[str, Any]:
    """Land the source folder (:func:`land_source`) and record the ``ingest`` gate."""
    from shelfguard.airflow.cosmos import CANDIDATE_BATCH_XCOM
    from shelfguard.data.ingest import IngestError

    ctx = RunContext.for_run(_run_ids(context)[0])
    try:
        try:
            manifest = land_source(
                ctx.settings, ctx.ledger, ctx.run_id, ctx.policy, source_dir(context, ctx.settings)
            )
        except IngestError as exc:
            _judge_ingest(ctx, {"refused": str(exc)})
            raise AirflowFailException(f"ingest refused the batch: {exc}") from exc
        context["ti"].xcom_push(key=CANDIDATE_BATCH_XCOM, value=manifest["batch_id"])
        _judge_ingest(ctx, {"manifest": manifest})
        return manifest
    finally:
        ctx.ledger.dispose()


def _judge_ingest(ctx: RunContext, evidence: dict[str, Any]) -> None:
    from shelfguard.gates import run_gate

    run_gate(
        "ingest",
        ctx.run_id,
        settings=ctx.settings,
        policy=ctx.policy,
        ledger=ctx.ledger,
        evidence=evidence,
    )


def publish_candidate(ctx: RunContext) -> PublishedSnapshot:
    """Publish the run's gated candidate as the marts and tell the ledger: the
    :func:`publish_marts` task without Airflow.

    The candidate's fingerprint must still be the one the training-data gate passed
    (:class:`~shelfguard.data.publication.PublicationError` otherwise). Snapshots older than
    the newest few are dropped unless a running run pinned them.
    """
    from shelfguard.airflow.assets import MARTS
    from shelfguard.data import publication
    from shelfguard.gates import MART_TABLES
    from shelfguard.model import training

    fingerprint = training.training_snapshot(ctx.ledger, ctx.run_id)
    schema = str(ctx.lineage["marts_schema"])
    batch_id = ctx.lineage.get("batch_id")
    gate = next(g for g in ctx.ledger.gate_results(ctx.run_id) if g.gate == "training_data")
    snapshot = publication.publish(
        ctx.settings,
        schema=schema,
        fingerprint=fingerprint,
        tables=MART_TABLES,
        run_id=ctx.run_id,
        batch_id=str(batch_id) if batch_id else None,
    )
    failpoint("publish.warehouse_committed")  # the next run's start records it
    publication.record_publication(ctx.ledger, snapshot, gate.metrics.get("tables") or {})
    ctx.ledger.update_lineage(
        ctx.run_id,
        published_assets=[asset.name for asset in MARTS],
        published_snapshot=snapshot.snapshot_id,
        data_snapshot_id=fingerprint,
    )
    pinned = {
        str(run.lineage.get("snapshot_id"))
        for run in ctx.ledger.recent_runs(limit=200)
        if run.outcome == "RUNNING" and run.lineage.get("snapshot_id")
    }
    retired = publication.retire_snapshots(ctx.settings, pinned=pinned | {snapshot.snapshot_id})
    if retired:
        ctx.ledger.update_lineage(ctx.run_id, retired_snapshots=retired)
    return snapshot


def publish_marts(context: Mapping[str, Any]) -> dict[str, Any]:
    """Publish the run's gated candidate as the marts, in one warehouse transaction.

    The candidate's fingerprint must still be the one the training-data gate passed.
    Then the snapshot is recorded, the batch becomes ``published``, and each marts
    Asset event (the task's outlets) carries the snapshot's id and fingerprint.
    """
    from shelfguard.airflow.assets import MARTS
    from shelfguard.data import publication

    ctx = RunContext.from_airflow(context)
    try:
        snapshot = publish_candidate(ctx)
    except publication.PublicationError as exc:
        raise AirflowFailException(str(exc)) from exc
    extra = {
        "snapshot_id": snapshot.snapshot_id,
        "fingerprint": snapshot.fingerprint,
        "run_id": ctx.run_id,
    }
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        for asset in MARTS:
            outlet_events[asset].extra = extra
    return {**extra, "assets": [asset.name for asset in MARTS], "schema": snapshot.schema_name}


def prepare_training(context: Mapping[str, Any]) -> dict[str, str]:
    """Export the gated marts as parquet and write the run's training config."""
    from shelfguard.model import training

    ctx = RunContext.from_airflow(context)
    settings, run_id = ctx.settings, ctx.run_id
    export = training.export_training_data(
        settings, training.training_snapshot(ctx.ledger, run_id), schema=_snapshot_schema(ctx)
    )
    overrides = dict((context.get("params") or {}).get("train") or {})
    config = training.write_train_config(settings, run_id, export, overrides)
    ctx.ledger.update_lineage(run_id, training_data=str(export.data_dir), training_rows=export.rows)
    return {
        "train_config": str(config),
        "train_result": str(training.run_dir(settings, run_id) / "train_result.json"),
        "data_dir": str(export.data_dir),
    }


def _snapshot_schema(ctx: RunContext) -> str:
    """The schema of the snapshot the run reads; the gated fingerprint must still be its own."""
    from shelfguard.model import training

    gated = training.training_snapshot(ctx.ledger, ctx.run_id)
    pinned = ctx.lineage.get("snapshot_fingerprint")
    if pinned and pinned != gated:
        raise AirflowFailException(
            f"the training-data gate passed snapshot {gated}, but the run pinned {pinned}"
        )
    return str(ctx.lineage.get("marts_schema") or "marts")


def register_model(context: Mapping[str, Any]) -> dict[str, str]:
    """Record the trained model's bytes in the ledger and write the evaluation config."""
    from shelfguard.model import training

    ctx = RunContext.from_airflow(context)
    artifact = training.register_model(ctx.settings, ctx.ledger, ctx.run_id)
    prepared = context["ti"].xcom_pull(task_ids="prepare_training")
    config = training.write_eval_config(
        ctx.settings,
        ctx.ledger,
        ctx.run_id,
        UPath(prepared["data_dir"]),
        precision=ctx.policy.index.precision,
    )
    return {"model_sha256": artifact.sha256, "eval_config": str(config)}


def prepare_index(context: Mapping[str, Any]) -> dict[str, str]:
    """Write the config of a full catalog embedding with the blessed challenger."""
    from shelfguard.model import index, training

    ctx = RunContext.from_airflow(context)
    settings, run_id = ctx.settings, ctx.run_id
    result = training.read_json(ctx.run_dir / "train_result.json", "training result")
    prepared = context["ti"].xcom_pull(task_ids="prepare_training")
    export = training.DatasetExport(
        snapshot_id=str(result["data_snapshot_id"]), data_dir=UPath(prepared["data_dir"]), rows={}
    )
    config = index.write_embed_config(
        settings, run_id, export, str(result["model_dir"]), precision=ctx.policy.index.precision
    )
    _, _, result_path = index.embed_paths(settings, run_id)
    return {"embed_config": str(config), "embed_result": str(result_path)}


def prepare_index_refresh(context: Mapping[str, Any]) -> dict[str, str] | None:
    """With a champion: write the config of an incremental refresh of its index, else skip.

    Only products that are new or whose text changed are encoded again, with the
    champion's own model; deleted products are dropped.
    """
    from shelfguard.model import index, training

    ctx = RunContext.from_airflow(context)
    settings, run_id, ledger = ctx.settings, ctx.run_id, ctx.ledger
    champion = ledger.get_alias("champion")
    if champion is None:
        ledger.update_lineage(run_id, index_refresh="skipped: no champion yet")
        return None
    snapshot = training.training_snapshot(ledger, run_id)
    export = training.export_training_data(settings, snapshot, schema=_snapshot_schema(ctx))
    config = index.write_embed_config(
        settings,
        run_id,
        export,
        champion.model.uri,
        previous_index_dir=champion.index.uri,
        precision=ctx.policy.index.precision,
    )
    ledger.update_lineage(
        run_id,
        data_snapshot_id=snapshot,
        model_sha256=champion.model.sha256,
        previous_index_sha256=champion.index.sha256,
    )
    _, _, result_path = index.embed_paths(settings, run_id)
    return {"embed_config": str(config), "embed_result": str(result_path)}


def start_canary(context: Mapping[str, Any]) -> dict[str, Any]:
    """Serve the approved challenger to the policy's share of sessions, when the policy
    requires a canary and there is a champion to compare it with."""
    from shelfguard.model import canary
    from shelfguard.model.promotion import ALIAS

    ctx = RunContext.from_airflow(context)
    if not ctx.policy.canary.required:
        return {"canary": "not required by the policy"}
    if ctx.ledger.get_alias(ALIAS) is None:
        return {"canary": "no champion yet: a first model is promoted without a canary"}
    try:
        alias = canary.start(ctx.ledger, ctx.policy, ctx.run_id)
    except canary.CanaryError as exc:
        raise AirflowFailException(str(exc)) from exc
    return {
        "canary": "started",
        "share": ctx.policy.canary.share,
        "model_sha256": alias.model.sha256,
        "index_sha256": alias.index.sha256,
    }


def _end_own_canary(ledger: Ledger, run_id: str) -> None:
    """A run that did not promote takes its pair out of the canary it started."""
    from shelfguard.model import canary

    run, alias = ledger.get_run(run_id), canary.running(ledger)
    if run is None or alias is None or alias.run_id != run_id or run.outcome == "PROMOTED":
        return
    canary.end(ledger, by="policy", reason=f"run {run_id} ended {run.outcome}: canary ended")


def promote_run(ctx: RunContext) -> AliasRecord:
    """Move the champion to the run's (model, index) and say so in the run's lineage: the
    :func:`promote` task without Airflow. Raises
    :class:`~shelfguard.model.promotion.PromotionRefused` (recorded in the lineage) when the
    ledger lacks a proof; a retry after the alias moved is a no-op."""
    from shelfguard.model.promotion import PromotionRefused
    from shelfguard.model.promotion import promote as move_champion

    try:
        alias = move_champion(ctx.ledger, ctx.policy, ctx.run_id)
    except PromotionRefused as exc:
        ctx.ledger.update_lineage(ctx.run_id, promotion_refused=exc.missing)
        raise
    failpoint("promote.alias_moved")  # a retry finds the alias moved: a no-op
    # A run that re-encoded the catalog with the champion's model (an index refresh)
    # promoted an index; one that trained a model promoted that model.
    kind = "index" if ctx.lineage.get("previous_index_sha256") else "model"
    ctx.ledger.update_lineage(ctx.run_id, promoted_version=alias.version, promoted=kind)
    return alias


def promote(context: Mapping[str, Any]) -> dict[str, Any]:
    """Move the champion alias to the run's (model, index) if the ledger holds every proof."""
    from shelfguard.model.promotion import PromotionRefused

    try:
        alias = promote_run(RunContext.from_airflow(context))
    except PromotionRefused as exc:
        raise AirflowFailException(str(exc)) from exc
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
        from shelfguard import notify
        from shelfguard.reports import write_report

        run = ledger.get_run(run_id)
        if run is not None and builds_candidate(run.lineage):
            _settle_batch(settings, ledger, run_id)
        else:
            _end_own_canary(ledger, run_id)
        report = write_report(settings, ledger, run_id)
        from shelfguard.lineage_events import emit_run_lineage

        emit_run_lineage(settings, ledger, run_id)
        # BLOCKED, REJECTED, FAILED, or a champion moved: the policy's channels are told
        # (a run that never pinned a policy has no channels to tell).
        with suppress(RunContextError):
            policy = RunContext.for_run(run_id, settings=settings, ledger=ledger).policy
            notify.send(policy, notify.outcome_notice(ledger, run_id, report.as_uri()), context)


def _settle_batch(settings: Settings, ledger: Ledger, run_id: str) -> None:
    """After a catalog_refresh run: a batch that was not published is blocked by the gate
    that stopped it, and the run's unpublished candidate schema is dropped."""
    from shelfguard.data import publication

    run = ledger.get_run(run_id)
    if run is None:
        return
    batch_id = run.lineage.get("batch_id")
    batch = ledger.get_batch(str(batch_id)) if batch_id else None
    if batch is not None and batch.state in ("landed", "gated") and run.outcome == "BLOCKED":
        ledger.set_batch_state(
            batch.batch_id,
            "blocked",
            run_id=run_id,
            gate=run.blocked_gate,
            reason=run.message,
        )
    schema = run.lineage.get("marts_schema")
    if schema and not run.lineage.get("published_snapshot"):
        publication.drop_candidate(settings, str(schema))


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
        ledger.update_lineage(run_id, failed_tasks=failed_tasks)
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
