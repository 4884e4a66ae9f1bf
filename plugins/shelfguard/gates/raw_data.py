"""The raw data gate: a landed batch, judged before anything reads it.

Checks the batch manifest the ingest recorded (quarantined share of each file, columns
beyond the contract) and runs every ``raw.*`` suite of ``expectations/`` on the batch's
own rows; a suite the policy requires (``required_suites``) that it cannot find fails it.
The subject is ``data:<batch id>``; once recorded, the verdict moves the batch to
``gated`` or ``blocked`` (:func:`settle`). See docs/gates/raw_data.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shelfguard.data.ingest import SPECS
from shelfguard.gates.common import (
    gate_suites,
    report_uri,
    severity_for,
    suite_metrics,
    suites_lineage,
)
from shelfguard.gates.core import GateError, GateOutcome, check
from shelfguard.quality import (
    SAMPLE_LIMIT,
    RowScope,
    fetch_rows,
    load_suite,
    open_warehouse,
    run_suites,
)

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext
    from shelfguard.ledger import IngestFileRecord, Ledger
    from shelfguard.policy import Policy

GATE = "raw_data"
# Raw rows carry the sha256 of the file they came from: a file already loaded by an
# earlier batch keeps that batch's _batch_id, so the file hash is what finds its rows.
BATCH_COLUMN = "_file_sha256"


def run(ctx: GateContext) -> GateOutcome:
    """Judge the run's landed batch: its manifest and every raw suite on its rows."""
    settings, policy = ctx.settings, ctx.policy
    batch_id, records = _batch_files(ctx.ledger, ctx.run_id)
    scope = RowScope(
        column=BATCH_COLUMN, partitions={record.table_name: record.sha256 for record in records}
    )
    names, required_checks = gate_suites(GATE, policy)
    suites = [load_suite(name, policy, scope) for name in names]
    with open_warehouse(settings.warehouse_url) as engine:
        manifest_checks = _manifest_checks(records, policy, engine)
    report = run_suites(
        suites,
        warehouse_url=settings.warehouse_url,
        gx_root=settings.home,
        run_name=ctx.run_id,
        scope=scope,
    )
    metrics = {
        "batch_id": batch_id,
        "files": {
            record.file_name: {
                "table": record.table_name,
                "sha256": record.sha256,
                "rows_read": record.rows_read,
                "rows_accepted": record.rows_accepted,
                "rows_quarantined": record.rows_quarantined,
                "quarantine_share": (
                    record.rows_quarantined / record.rows_read if record.rows_read else 0.0
                ),
                "extra_columns": list(record.extra_columns),
            }
            for record in records
        },
        "suites": suite_metrics(report),
    }
    return GateOutcome.of(
        GATE,
        f"data:{batch_id}",
        required_checks + manifest_checks + report.checks,
        metrics,
        report_uri(report),
        suites_lineage(ctx, suites),
    )


def settle(ctx: GateContext, outcome: GateOutcome) -> None:
    """Move the run's batch to ``blocked`` (the gate failed) or ``gated``.

    A batch delivered again after it was published keeps its state: the same content is
    not judged twice within its life (this run's verdict is recorded all the same).
    """
    batch_id = str(outcome.metrics["batch_id"])
    batch = ctx.ledger.get_batch(batch_id)
    if batch is not None and batch.state != "published":
        blocked = outcome.status == "fail"
        ctx.ledger.set_batch_state(
            batch_id,
            "blocked" if blocked else "gated",
            run_id=ctx.run_id,
            gate=GATE if blocked else None,
            reason=outcome.summary if blocked else None,
        )


def _batch_files(ledger: Ledger, run_id: str) -> tuple[str, list[IngestFileRecord]]:
    """The run's batch id and the manifest of every file in it, reloaded ones included."""
    run = ledger.get_run(run_id)
    lineage = run.lineage if run else {}
    batch_id = lineage.get("batch_id")
    if not batch_id:
        raise GateError(f"run {run_id!r} has no batch_id in its lineage: run ingest first")
    inputs: Mapping[str, str] = lineage.get("inputs") or {}
    if not inputs:
        return str(batch_id), ledger.ingested_files(batch_id=str(batch_id))
    unknown = sorted(set(inputs) - {spec.file_name for spec in SPECS})
    if unknown:
        raise GateError(f"batch {batch_id}: files the contract does not know: {unknown}")
    files = []
    for spec in SPECS:
        if spec.file_name not in inputs:
            continue
        record = ledger.find_ingested_file(f"raw.{spec.table}", inputs[spec.file_name])
        if record is None:
            raise GateError(f"batch {batch_id}: no manifest for {spec.file_name}")
        files.append(record)
    return str(batch_id), files


def _quarantine_samples(engine: sa.Engine, record: IngestFileRecord) -> list[dict[str, Any]]:
    table = record.table_name.removeprefix("raw.")
    return fetch_rows(
        engine,
        f"select line_number, reason, detail, original_line from quarantine.{table} "
        f"where file_sha256 = '{record.sha256}' order by line_number",
        limit=SAMPLE_LIMIT,
    )


def _manifest_checks(
    records: list[IngestFileRecord], policy: Policy, engine: sa.Engine
) -> list[dict[str, Any]]:
    limit = policy.raw_data.max_quarantine_share
    checks = []
    for record in records:
        table = record.table_name.removeprefix("raw.")
        share = record.rows_quarantined / record.rows_read if record.rows_read else 0.0
        name = f"raw_data.quarantine_share.{table}"
        passed = share <= limit
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(record.quarantine_by_reason.items()))
        observed = f"{share:.2%} ({record.rows_quarantined} of {record.rows_read} lines)"
        checks.append(
            check(
                name,
                passed=passed,
                severity=severity_for(policy, name),
                comment=(
                    f"too many lines of {record.file_name} quarantined: the file is too "
                    "damaged to trust the rows that did load"
                ),
                observed=observed + (f": {reasons}" if reasons else ""),
                expected=f"at most {limit:.2%} (raw_data.max_quarantine_share)",
                message="" if passed else f"{record.file_name}: {observed} quarantined",
                unexpected_count=record.rows_quarantined,
                sample_rows=[] if passed else _quarantine_samples(engine, record),
            )
        )
        name = f"raw_data.extra_columns.{table}"
        extra = list(record.extra_columns)
        passed = not extra or policy.raw_data.allow_extra_columns
        checks.append(
            check(
                name,
                passed=passed,
                severity=severity_for(policy, name),
                comment=(
                    f"schema drift in {record.file_name}: columns the contract does not know, "
                    "added or renamed upstream without review, and dropped on load"
                ),
                observed=extra,
                expected="no columns beyond the contract (raw_data.allow_extra_columns)",
                message=""
                if passed
                else f"{record.file_name}: unexpected column(s) {', '.join(extra)}",
                unexpected_count=len(extra),
                sample_rows=[{"file_name": record.file_name, "column": c} for c in extra],
            )
        )
    return checks
