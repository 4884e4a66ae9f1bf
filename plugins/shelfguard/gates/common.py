"""What the two data gates (``raw_data``, ``training_data``) share: severities from the
policy, the suites they run (those the policy requires among them), the suites' lineage
and metrics, and the tables a snapshot holds."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shelfguard.quality import (
    QualityReport,
    Severity,
    SuiteSpec,
    check,
    default_suites_dir,
    suite_gates,
)

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext
    from shelfguard.policy import Policy

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


def severity_for(policy: Policy, name: str) -> Severity:
    """The policy's severity for a check, trying ``gate.check.table`` then ``gate.check``."""
    family = name.rsplit(".", 1)[0]
    chosen = policy.severities.get(name) or policy.severities.get(family) or "error"
    return "warn" if chosen == "warn" else "error"


def gate_suites(
    gate: str, policy: Policy, suites_dir: Path | None = None
) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
    """The suites ``gate`` runs, and one check per suite the policy requires of it.

    The gate runs every suite file bound to it (:func:`shelfguard.quality.suites_of`: a
    new file is enough). Each suite in the policy's ``required_suites`` for ``gate`` gets
    the check ``<gate>.required_suite.<suite>`` (severity ``error`` unless the policy's
    ``severities`` says otherwise): it passes when the gate runs the suite, and fails,
    naming the suite, when its file is missing (deleted, renamed) or bound to another
    gate. A policy that requires nothing of ``gate`` adds no check.
    """
    folder = suites_dir or default_suites_dir()
    bound = suite_gates(folder)
    names = tuple(name for name, named in bound.items() if named == gate)
    required = [
        name for named, listed in policy.required_suites.items() if named == gate for name in listed
    ]
    checks = [
        _required_suite_check(policy, gate, name, bound.get(name), folder / f"{name}.yml")
        for name in required
    ]
    return names, checks


def _required_suite_check(
    policy: Policy, gate: str, suite: str, bound_to: str | None, path: Path
) -> dict[str, Any]:
    observed = f"no suite file {path}" if bound_to is None else f"{path} runs in {bound_to}"
    passed = bound_to == gate
    name = f"{gate}.required_suite.{suite}"
    return check(
        name,
        passed=passed,
        severity=severity_for(policy, name),
        comment=(
            f"a suite the policy requires of the {gate} gate cannot run (its file deleted, "
            "renamed or bound to another gate): the gate would judge the data with fewer "
            "checks than governance approved"
        ),
        observed=observed,
        expected=f"{suite} runs in {gate} (required_suites.{gate} in the policy)",
        message="" if passed else f"the policy requires suite {suite} in {gate}: {observed}",
    )


def suites_lineage(ctx: GateContext, suites: list[SuiteSpec]) -> dict[str, Any]:
    """The run's lineage once a gate ran ``suites``: every suite run so far (name → sha256)
    and the policy that judged them."""
    known = dict(ctx.lineage.get("suites") or {})
    known.update({suite.name: suite.sha256 for suite in suites})
    return {"suites": known, "policy_sha256": ctx.policy.sha256}


def suite_metrics(report: QualityReport) -> dict[str, Any]:
    """Per suite: its table, sha256, rows read, checks run and checks that did not hold."""
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


def report_uri(report: QualityReport) -> str | None:
    """The Data Docs page of the gate's validation run, when one was built."""
    return report.docs_index.as_uri() if report.docs_index else None
