"""The training-data gate: the marts snapshot a model would be trained on.

Runs every ``marts.*`` suite of ``expectations/`` on the snapshot the run names
(``marts_schema``: the run's candidate, or the published snapshot a retraining run
pinned), and fails when a suite the policy requires (``required_suites``) is not among
them; checks the category mix against the last accepted one and, when the run pinned a
fingerprint, that the snapshot still has it. The subject is ``data:<fingerprint>``.
See docs/gates/training_data.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shelfguard.data.publication import MARTS, fingerprint_tables
from shelfguard.gates.common import (
    MART_TABLES,
    gate_suites,
    report_uri,
    severity_for,
    suite_metrics,
    suites_lineage,
)
from shelfguard.gates.core import GateOutcome, check
from shelfguard.quality import (
    SAMPLE_LIMIT,
    fetch_rows,
    load_suite,
    open_warehouse,
    run_suites,
)

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext
    from shelfguard.ledger import Ledger
    from shelfguard.policy import Policy

GATE = "training_data"
# How far back (in runs) to look for the last passed training_data gate.
_BASELINE_RUNS = 1000


def run(ctx: GateContext) -> GateOutcome:
    """Judge the run's marts snapshot: its suites, its category drift, its fingerprint."""
    settings, policy, lineage = ctx.settings, ctx.policy, ctx.lineage
    schema = str(lineage.get("marts_schema") or MARTS)
    names, required_checks = gate_suites(GATE, policy)
    suites = [load_suite(name, policy, marts_schema=schema) for name in names]
    with open_warehouse(settings.warehouse_url) as engine:
        fingerprint, tables = _fingerprint(engine, schema)
        mix = _category_mix(engine, schema) if tables["marts.agg_category_mix"] else None
        splits = _pairs_per_split(engine, schema) if tables["marts.fct_training_pairs"] else {}
    report = run_suites(
        suites, warehouse_url=settings.warehouse_url, gx_root=settings.home, run_name=ctx.run_id
    )
    baseline = _baseline_mix(ctx.ledger, ctx.run_id)
    drift_check, drift = _drift_check(mix, baseline, policy)
    checks = [*required_checks, *report.checks, drift_check]
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
        "suites": suite_metrics(report),
    }
    return GateOutcome.of(
        GATE,
        f"data:{fingerprint}",
        checks,
        metrics,
        report_uri(report),
        suites_lineage(ctx, suites),
    )


def total_variation(current: Mapping[str, float], baseline: Mapping[str, float]) -> float:
    """Total-variation distance between two category mixes (0 = same, 1 = disjoint)."""
    classes = set(current) | set(baseline)
    return 0.5 * sum(abs(current.get(c, 0.0) - baseline.get(c, 0.0)) for c in classes)


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
    severity = severity_for(policy, name)

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
