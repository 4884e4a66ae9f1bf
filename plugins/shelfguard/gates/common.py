"""What the two data gates (``raw_data``, ``training_data``) share: severities from the
policy, the suites' lineage and metrics, and the tables a snapshot holds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shelfguard.quality import QualityReport, Severity, SuiteSpec

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
