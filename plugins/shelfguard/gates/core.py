"""The one shape every gate has: its checks, one status rule, one outcome, one record.

A gate is a module of this package with

- ``GATE``: its name, as recorded in ``gate_results.gate``;
- ``run(ctx: GateContext) -> GateOutcome``: judge the run's evidence and return the
  verdict (nothing recorded yet). The context is the run's (settings, ledger, pinned
  policy, lineage, artifact folder) plus the evidence the caller hands over, when the gate
  judges something only the calling task holds (the ingest task's manifest, the dbt
  results of one Cosmos task);
- optionally ``settle(ctx, outcome)``: what the verdict moves once it is recorded (the raw
  data gate moves the batch to ``gated`` or ``blocked``).

:func:`shelfguard.gates.run_gate` runs one by name and records its outcome as ONE
``gate_results`` row (:func:`record`); :class:`shelfguard.airflow.operators.GateOperator` is the
one Airflow operator for every gate the DAGs run.

Every check is a :data:`Check` built by :func:`check`, and every gate's status follows
:func:`gate_status`: ``fail`` if a check of severity ``error`` failed (the run stops:
invariant 1), ``warn`` if only ``warn`` checks failed (recorded, the run goes on), else
``pass``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shelfguard.quality import Severity, check
from shelfguard.run_context import RunContext

if TYPE_CHECKING:
    from shelfguard.ledger import GateRecord

__all__ = [
    "Check",
    "Gate",
    "GateContext",
    "GateError",
    "GateOutcome",
    "Severity",
    "check",
    "gate_status",
    "record",
]

#: One check's outcome, as the ledger stores it and the report reads it: ``name``,
#: ``status`` (pass / warn / fail / skipped), ``severity`` (error / warn), ``observed``,
#: ``expected``, ``message``, ``comment``, and for data checks ``unexpected_count`` and
#: ``sample_rows``. Built by :func:`check`.
Check = dict[str, Any]


class GateError(RuntimeError):
    """The gate cannot run at all (unknown gate, no batch recorded for the run)."""


@dataclass(frozen=True)
class GateContext(RunContext):
    """The run's context, plus the evidence the calling task hands the gate (by name)."""

    evidence: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateOutcome:
    """One gate's verdict, as recorded in the ledger."""

    gate: str
    status: str
    subject: str
    checks: list[Check] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    report_uri: str | None = None
    #: What the run's lineage gains once the verdict is recorded (the suites a data gate
    #: ran, by sha256, and the policy that judged them).
    lineage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        gate: str,
        subject: str,
        checks: list[Check],
        metrics: Mapping[str, Any] | None = None,
        report_uri: str | None = None,
        lineage: Mapping[str, Any] | None = None,
    ) -> GateOutcome:
        """The outcome of ``checks``, its status decided by :func:`gate_status`."""
        status = gate_status(checks)
        return cls(
            gate, status, subject, checks, dict(metrics or {}), report_uri, dict(lineage or {})
        )

    @property
    def failed_checks(self) -> list[Check]:
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


class Gate(Protocol):
    """What a gate module exposes (checked for every module by the tests)."""

    GATE: str

    def run(self, ctx: GateContext) -> GateOutcome:
        """Judge the run's evidence; record nothing."""
        ...


def gate_status(checks: Iterable[Mapping[str, Any]]) -> str:
    """``fail`` if an error check failed, ``warn`` if only warn checks did, else ``pass``."""
    statuses = {c.get("status") for c in checks}
    if "fail" in statuses:
        return "fail"
    return "warn" if "warn" in statuses else "pass"


def record(ctx: GateContext, outcome: GateOutcome) -> GateRecord:
    """Record ``outcome`` as the run's one ``gate_results`` row for its gate, then add its
    :attr:`~GateOutcome.lineage` to the run's."""
    row = ctx.ledger.record_gate(
        ctx.run_id,
        outcome.gate,
        outcome.status,
        subject=outcome.subject,
        checks=outcome.checks,
        metrics=outcome.metrics,
        report_uri=outcome.report_uri,
    )
    if outcome.lineage:
        ctx.ledger.update_lineage(ctx.run_id, **outcome.lineage)
    return row
