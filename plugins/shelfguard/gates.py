"""The data gates: ``raw_data`` on a landed batch, ``training_data`` on the marts before training.

A gate runs the Great Expectations suites of its datasets (``expectations/*.yml``)
plus the policy checks that need the ledger (the batch manifest, the last accepted
category mix), decides one status and records it as ONE ``gate_results`` row:

- ``fail`` if any check of severity ``error`` failed: the run stops (invariant 1);
- ``warn`` if only ``warn`` checks failed: recorded, the run goes on;
- ``pass`` otherwise.

Severities come from the suite files; ``governance.yml``'s ``severities`` overrides
them per check name (``<suite>.<id>``, or ``<gate>.<check>.<table>`` for the
per-file checks, which also accept the family name ``<gate>.<check>``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from shelfguard.config import Settings, load_settings
from shelfguard.ingest import SPECS
from shelfguard.ledger import IngestFileRecord, Ledger, open_ledger
from shelfguard.policy import Policy
from shelfguard.publication import MARTS, fingerprint_tables
from shelfguard.quality import (
    SAMPLE_LIMIT,
    QualityReport,
    RowScope,
    Severity,
    SuiteSpec,
    check,
    fetch_rows,
    load_suite,
    open_warehouse,
    run_suites,
    suites_of,
)

__all__ = [
    "GATES",
    "MART_TABLES",
    "RAW_SUITES",
    "TRAINING_SUITES",
    "GateError",
    "GateOutcome",
    "gate_status",
    "run_gate",
    "total_variation",
]

GATES = ("raw_data", "training_data")
#: The suites each gate runs as the project ships them (the gates discover them anew at
#: every run: a new file in ``expectations/`` is enough, see :func:`quality.suites_of`).
RAW_SUITES = suites_of("raw_data")
TRAINING_SUITES = suites_of("training_data")
#: The marts a snapshot holds and the training-data gate fingerprints (without schema:
#: a candidate or a published snapshot lives in its own ``snapshot_<hex>`` schema).
MART_TABLES = (
    "dim_products",
    "fct_training_pairs",
    "fct_golden_judgements",
    "agg_category_mix",
    # Not in the marts contract, but read by the k-anonymity check (users per query).
    "agg_query_popularity",
)
# Raw rows carry the sha256 of the file they came from: a file already loaded by an
# earlier batch keeps that batch's _batch_id, so the file hash is what finds its rows.
BATCH_COLUMN = "_file_sha256"
# How far back (in runs) to look for the last passed training_data gate.
_BASELINE_RUNS = 1000


class GateError(RuntimeError):
    """The gate cannot run at all (unknown gate, no batch recorded for the run)."""


@dataclass(frozen=True)
class GateOutcome:
    """One gate's verdict, as recorded in the ledger."""

    gate: str
    status: str
    subject: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    report_uri: str | None = None

    @property
    def failed_checks(self) -> list[dict[str, Any]]:
        """Checks that did not hold: status ``fail`` (blocking) or ``warn``."""
        return [c for c in self.checks if c.get("status") in ("fail", "warn")]

    @property
    def summary(self) -> str:
        """One line naming the gate, its verdict and the checks that failed."""
        failed = [c["name"] for c in self.checks if c.get("status") == "fail"]
        warned = [c["name"] for c in self.checks if c.get("status") == "warn"]
        head = f"{self.gate} {self.status.upper()} on {self.subject}"
        if not failed and not warned:
            evaluated = sum(1 for c in self.checks if c.get("status") == "pass")
            return f"{head}: all {evaluated} checks passed"
        parts = []
        if failed:
            parts.append(f"{len(failed)} failed ({', '.join(failed)})")
        if warned:
            parts.append(f"{len(warned)} warning(s) ({', '.join(warned)})")
        return f"{head}: {'; '.join(parts)}"


def gate_status(checks: Iterable[Mapping[str, Any]]) -> str:
    """``fail`` if an error check failed, ``warn`` if only warn checks did, else ``pass``."""
    statuses = {c.get("status") for c in checks}
    if "fail" in statuses:
        return "fail"
    return "warn" if "warn" in statuses else "pass"


def total_variation(current: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """Total-variation distance between two category mixes (0 = same, 1 = disjoint)."""
    classes = set(current) | set(baseline)
    return 0.5 * sum(abs(current.get(c, 0.0) - baseline.get(c, 0.0)) for c in classes)


def run_gate(
    name: str,
    run_id: str,
    *,
    settings: Settings | None = None,
    policy: Policy | None = None,
    ledger: Ledger | None = None,
) -> GateOutcome:
    """Run gate ``name`` for ``run_id``, record its verdict and lineage, and return it.

    ``settings`` and ``ledger`` default to the process's own (environment); ``policy`` to
    the one the run pinned when it started. Raises :class:`GateError` when the gate cannot
    run (unknown name, no warehouse, no batch for a raw-data gate); a data problem is a
    ``fail`` outcome, never an exception.

    The raw-data gate moves the run's batch to ``gated`` or ``blocked``. The
    training-data gate judges the marts snapshot the run names in its lineage
    (``marts_schema``: the run's candidate, or the published snapshot a retraining run
    pinned) and, when the run pinned a fingerprint, fails unless the snapshot still has it.
    """
    if name not in GATES:
        raise GateError(f"unknown gate {name!r}; known gates: {', '.join(GATES)}")
    settings = settings or load_settings()
    if settings.warehouse_kind == "duckdb" and not settings.duckdb_path.is_file():
        raise GateError(f"the warehouse {settings.duckdb_path} does not exist: nothing to check")
    owned = ledger is None
    if ledger is None:
        ledger = open_ledger(settings.ledger_url)
    try:
        if ledger.get_run(run_id) is None:
            raise GateError(f"run {run_id!r} is not in the ledger: start the run first")
        if policy is None:
            policy = _run_policy(ledger, run_id)
        if name == "raw_data":
            outcome, suites = _raw_data(run_id, settings, policy, ledger)
        else:
            outcome, suites = _training_data(run_id, settings, policy, ledger)
        ledger.record_gate(
            run_id,
            outcome.gate,
            outcome.status,
            subject=outcome.subject,
            checks=outcome.checks,
            metrics=outcome.metrics,
            report_uri=outcome.report_uri,
        )
        _record_lineage(ledger, run_id, suites, policy)
        if name == "raw_data":
            batch_id = str(outcome.metrics["batch_id"])
            batch = ledger.get_batch(batch_id)
            # A batch delivered again after it was published keeps its state: the same
            # content is not judged twice within its life (this run's verdict is recorded).
            if batch is not None and batch.state != "published":
                blocked = outcome.status == "fail"
                ledger.set_batch_state(
                    batch_id,
                    "blocked" if blocked else "gated",
                    run_id=run_id,
                    gate="raw_data" if blocked else None,
                    reason=outcome.summary if blocked else None,
                )
        return outcome
    finally:
        if owned:
            ledger.dispose()


def _run_policy(ledger: Ledger, run_id: str) -> Policy:
    """The policy the run pinned when it started; a run opened without pinning one (by
    hand, outside the DAGs) is judged by the policy file as it is now."""
    from shelfguard.policy import load_policy
    from shelfguard.run_context import pinned_policy

    run = ledger.get_run(run_id)
    sha = str((run.lineage if run else {}).get("policy_sha256") or "")
    return pinned_policy(ledger, sha) if sha else load_policy()


def _record_lineage(ledger: Ledger, run_id: str, suites: list[SuiteSpec], policy: Policy) -> None:
    run = ledger.get_run(run_id)
    known = dict(run.lineage.get("suites") or {}) if run else {}
    known.update({suite.name: suite.sha256 for suite in suites})
    ledger.update_lineage(run_id, suites=known, policy_sha256=policy.sha256)


def _severity(policy: Policy, name: str) -> Severity:
    """The policy's severity for a check, trying ``gate.check.table`` then ``gate.check``."""
    family = name.rsplit(".", 1)[0]
    chosen = policy.severities.get(name) or policy.severities.get(family) or "error"
    return "warn" if chosen == "warn" else "error"


def _suite_metrics(report: QualityReport) -> dict[str, Any]:
    return {
        run.suite.name: {
            "table": run.suite.table,
            "sha256": run.suite.sha256,
            "rows": run.rows,
            "checks": len(run.checks),
            "failed": sum(1 for c in run.checks if c["status"] in ("fail", "warn")),
        }
        for run in report.runs
    }


def _report_uri(report: QualityReport) -> str | None:
    return report.docs_index.as_uri() if report.docs_index else None


# --------------------------------------------------------------------------------------
# raw_data
# --------------------------------------------------------------------------------------


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
                severity=_severity(policy, name),
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
                severity=_severity(policy, name),
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


def _raw_data(
    run_id: str, settings: Settings, policy: Policy, ledger: Ledger
) -> tuple[GateOutcome, list[SuiteSpec]]:
    batch_id, records = _batch_files(ledger, run_id)
    scope = RowScope(
        column=BATCH_COLUMN, partitions={record.table_name: record.sha256 for record in records}
    )
    suites = [load_suite(name, policy, scope) for name in suites_of("raw_data")]
    with open_warehouse(settings.warehouse_url) as engine:
        manifest_checks = _manifest_checks(records, policy, engine)
    report = run_suites(
        suites,
        warehouse_url=settings.warehouse_url,
        gx_root=settings.home,
        run_name=run_id,
        scope=scope,
    )
    checks = manifest_checks + report.checks
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
        "suites": _suite_metrics(report),
    }
    outcome = GateOutcome(
        gate="raw_data",
        status=gate_status(checks),
        subject=f"data:{batch_id}",
        checks=checks,
        metrics=metrics,
        report_uri=_report_uri(report),
    )
    return outcome, suites


# --------------------------------------------------------------------------------------
# training_data
# --------------------------------------------------------------------------------------


def _fingerprint(engine: sa.Engine, schema: str) -> tuple[str, dict[str, Any]]:
    """A content hash of the snapshot's marts, computed by the warehouse."""
    with engine.connect() as connection:
        return fingerprint_tables(connection, schema, MART_TABLES)


def _category_mix(engine: sa.Engine, schema: str) -> dict[str, float]:
    # Shares recomputed from counts: independent of how the mart rounds its own share.
    rows = fetch_rows(
        engine,
        "select product_class, 1.0 * n_products / sum(n_products) over () as share "
        f"from {schema}.agg_category_mix",
    )
    return {str(row["product_class"]): float(row["share"] or 0.0) for row in sorted(rows, key=str)}


def _pairs_per_split(engine: sa.Engine, schema: str) -> dict[str, int]:
    rows = fetch_rows(
        engine,
        f"select split, count(*) as n_pairs from {schema}.fct_training_pairs group by split",
    )
    return {str(row["split"]): int(row["n_pairs"]) for row in rows}


def _baseline_mix(ledger: Ledger, run_id: str) -> tuple[str, dict[str, float]] | None:
    """The category mix stored by the last passed training_data gate of another run."""
    for run in ledger.recent_runs(limit=_BASELINE_RUNS):
        if run.run_id == run_id:
            continue
        for result in ledger.gate_results(run.run_id):
            mix = result.metrics.get("category_mix")
            if result.gate == "training_data" and result.status == "pass" and mix:
                return run.run_id, {str(k): float(v) for k, v in mix.items()}
    return None


_DRIFT_COMMENT = (
    "category-mix drift: the catalog's class mix moved too far from the last accepted "
    "snapshot, so a model trained and evaluated on it may not be comparable to the champion"
)


def _drift_check(
    current: dict[str, float] | None,
    baseline: tuple[str, dict[str, float]] | None,
    policy: Policy,
) -> tuple[dict[str, Any], float | None]:
    name = "training_data.category_drift"
    limit = policy.training_data.max_category_drift
    severity = _severity(policy, name)

    def outcome(
        passed: bool, observed: Any, message: str, samples: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        return check(
            name,
            passed=passed,
            severity=severity,
            comment=_DRIFT_COMMENT,
            observed=observed,
            expected=f"at most {limit} total-variation distance (training_data.max_category_drift)",
            message=message,
            sample_rows=samples or [],
        )

    if current is None:
        missing = "marts.agg_category_mix does not exist"
        return outcome(False, missing, missing), None
    if baseline is None:
        first = "no baseline yet: this mix becomes the baseline once the gate passes"
        return outcome(True, "no baseline yet", first), None
    baseline_run, previous = baseline
    drift = total_variation(current, previous)
    moved = sorted(
        set(current) | set(previous),
        key=lambda c: (-abs(current.get(c, 0.0) - previous.get(c, 0.0)), c),
    )
    changes = [
        {
            "product_class": c,
            "baseline_share": round(previous.get(c, 0.0), 4),
            "current_share": round(current.get(c, 0.0), 4),
            "change": round(current.get(c, 0.0) - previous.get(c, 0.0), 4),
        }
        for c in moved[:SAMPLE_LIMIT]
    ]
    message = f"{drift:.4f} against the mix of run {baseline_run}"
    return outcome(drift <= limit, round(drift, 4), message, changes), drift


def _snapshot_check(pinned: str, observed: str) -> dict[str, Any]:
    return check(
        "training_data.snapshot_unchanged",
        passed=observed == pinned,
        severity="error",
        comment=(
            "the published snapshot this run pinned changed under it: what is trained on "
            "must be exactly what was published and gated"
        ),
        observed=observed,
        expected=f"fingerprint {pinned} (pinned when the run started)",
        message="" if observed == pinned else f"fingerprint {observed}, pinned {pinned}",
    )


def _training_data(
    run_id: str, settings: Settings, policy: Policy, ledger: Ledger
) -> tuple[GateOutcome, list[SuiteSpec]]:
    run = ledger.get_run(run_id)
    lineage = run.lineage if run else {}
    schema = str(lineage.get("marts_schema") or MARTS)
    suites = [load_suite(name, policy, marts_schema=schema) for name in suites_of("training_data")]
    with open_warehouse(settings.warehouse_url) as engine:
        fingerprint, tables = _fingerprint(engine, schema)
        mix = _category_mix(engine, schema) if tables["marts.agg_category_mix"] else None
        splits = _pairs_per_split(engine, schema) if tables["marts.fct_training_pairs"] else {}
    report = run_suites(
        suites, warehouse_url=settings.warehouse_url, gx_root=settings.home, run_name=run_id
    )
    baseline = _baseline_mix(ledger, run_id)
    drift_check, drift = _drift_check(mix, baseline, policy)
    checks = [*report.checks, drift_check]
    pinned = lineage.get("snapshot_fingerprint")
    if pinned:
        checks.append(_snapshot_check(str(pinned), fingerprint))
    metrics = {
        "fingerprint": fingerprint,
        "marts_schema": schema,
        "snapshot_id": lineage.get("snapshot_id"),
        "tables": tables,
        "pairs_per_split": splits,
        "category_mix": mix or {},
        "category_drift": drift,
        "baseline_run_id": baseline[0] if baseline else None,
        "suites": _suite_metrics(report),
    }
    outcome = GateOutcome(
        gate="training_data",
        status=gate_status(checks),
        subject=f"data:{fingerprint}",
        checks=checks,
        metrics=metrics,
        report_uri=_report_uri(report),
    )
    return outcome, suites
