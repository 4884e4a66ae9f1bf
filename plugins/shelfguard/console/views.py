"""What each console page shows, read from the ledger into typed rows.

The Run page uses the governance report's own model
(:func:`shelfguard.reports.build_report`), so the console and ``shelfguard report``
state a run's verdict, gates and evidence in the same words.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shelfguard.console.actions import RollbackTarget, rollback_targets, waiting_pair
from shelfguard.ledger import AliasMove, AliasRecord, BatchRecord, Ledger, RunRecord
from shelfguard.model.promotion import ALIAS

#: The outcomes a finished run can have, and RUNNING: the Runs page's filter choices.
OUTCOME_CHOICES = ("OK", "PROMOTED", "BLOCKED", "REJECTED", "FAILED", "ABANDONED", "RUNNING")
#: How many runs the Runs page reads at most.
RUNS_LIMIT = 200


def duration_text(start: datetime, end: datetime | None) -> str:
    """``1h 02m``, ``3m 05s``, ``12s``; ``—`` while the run has not finished."""
    if end is None:
        return "—"
    seconds = max(int((end - start).total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


@dataclass(frozen=True)
class RunRow:
    """One line of the Runs page."""

    run_id: str
    dag_id: str
    outcome: str
    blocked_gate: str | None
    blocking_check: str | None
    triggered_by: str | None
    started_at: datetime
    duration: str
    awaiting_decision: bool


def _blocking_check(ledger: Ledger, run: RunRecord) -> str | None:
    if not run.blocked_gate:
        return None
    for gate in ledger.gate_results(run.run_id):
        if gate.gate == run.blocked_gate and gate.status == "fail":
            failed = [str(c.get("name")) for c in gate.checks if c.get("status") == "fail"]
            if failed:
                return ", ".join(failed)
    return None


def run_rows(
    ledger: Ledger, *, readable_dags: set[str], outcome: str | None, dag_id: str | None
) -> list[RunRow]:
    """The newest runs of the DAGs the user may read, filtered by outcome and DAG."""
    rows = []
    for run in ledger.recent_runs(limit=RUNS_LIMIT, dag_id=dag_id or None):
        if run.dag_id not in readable_dags or (outcome and run.outcome != outcome):
            continue
        rows.append(
            RunRow(
                run_id=run.run_id,
                dag_id=run.dag_id,
                outcome=run.outcome,
                blocked_gate=run.blocked_gate,
                blocking_check=_blocking_check(ledger, run),
                triggered_by=run.triggered_by,
                started_at=run.started_at,
                duration=duration_text(run.started_at, run.finished_at),
                awaiting_decision=waiting_pair(ledger, run) is not None,
            )
        )
    return rows


def known_dags(ledger: Ledger) -> list[str]:
    """The DAG ids the ledger has runs of (for the filter), sorted."""
    return sorted({r.dag_id for r in ledger.recent_runs(limit=RUNS_LIMIT)})


@dataclass(frozen=True)
class Pending:
    """A run waiting for a decision, with the evidence an approver reads first."""

    run: RunRecord
    model_sha256: str
    index_sha256: str
    gates: list[dict[str, Any]]
    metrics: dict[str, dict[str, float]]
    approvers: list[str]
    policy_sha256: str


def pending_runs(ledger: Ledger, readable_dags: set[str]) -> list[Pending]:
    """Every run of a readable DAG that waits for a decision, oldest first."""
    from shelfguard.run_context import RunContextError, pinned_policy

    found = []
    for run in reversed(ledger.running_runs()):
        pair = waiting_pair(ledger, run)
        if pair is None or run.dag_id not in readable_dags:
            continue
        sha = str(run.lineage.get("policy_sha256") or "")
        try:
            approvers = list(pinned_policy(ledger, sha).approval.approvers) if sha else []
        except RunContextError:
            approvers = []
        gates, metrics = [], {}
        for gate in ledger.gate_results(run.run_id):
            failed = [str(c.get("name")) for c in gate.checks if c.get("status") != "pass"]
            gates.append({"gate": gate.gate, "status": gate.status, "failed": failed})
            if gate.gate == "evaluation":
                metrics = dict(gate.metrics.get("overall", {}))
        found.append(Pending(run, pair[0], pair[1], gates, metrics, approvers, sha))
    return list(reversed(found))


@dataclass(frozen=True)
class HistoryRow:
    """One move of the champion, with the pair it moved to."""

    move: AliasMove
    model_sha256: str
    index_sha256: str
    is_current: bool
    may_return: bool


@dataclass(frozen=True)
class ChampionPage:
    """The current pair, every move of the alias, and where a rollback may go."""

    current: AliasRecord | None
    history: list[HistoryRow]
    targets: list[RollbackTarget]
    intact: bool
    problem: str | None


def champion_page(ledger: Ledger) -> ChampionPage:
    """The Champion page's content; rollback targets only when the ledger verifies."""
    report = ledger.verify()
    current = ledger.get_alias(ALIAS)
    targets = rollback_targets(ledger, current) if report.ok else []
    versions = {t.move.version for t in targets}
    shas: dict[int, str] = {}
    rows = []
    for move in reversed(ledger.alias_history(ALIAS)):
        for artifact_id in (move.model_artifact_id, move.index_artifact_id):
            if artifact_id not in shas:
                artifact = ledger.get_artifact(artifact_id)
                shas[artifact_id] = artifact.sha256 if artifact else "?"
        rows.append(
            HistoryRow(
                move=move,
                model_sha256=shas[move.model_artifact_id],
                index_sha256=shas[move.index_artifact_id],
                is_current=current is not None and move.version == current.version,
                may_return=move.version in versions,
            )
        )
    problem = None if report.first is None else str(report.first)
    return ChampionPage(current, rows, targets, report.ok, problem)


@dataclass(frozen=True)
class BatchRow:
    """A landed batch, its state and where its rows went."""

    batch: BatchRecord
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_by_reason: dict[str, int] = field(default_factory=dict)


def batch_rows(ledger: Ledger, state: str | None) -> list[BatchRow]:
    """The newest batches (in one state, when given), with quarantine counts by reason."""
    rows = []
    for batch in ledger.batches(limit=100, state=state or None):
        reasons: Counter[str] = Counter()
        for loaded in ledger.ingested_files(batch_id=batch.batch_id):
            reasons.update(loaded.quarantine_by_reason)
        rows.append(
            BatchRow(
                batch=batch,
                rows_read=batch.count("rows_read"),
                rows_accepted=batch.count("rows_accepted"),
                rows_quarantined=batch.count("rows_quarantined"),
                quarantine_by_reason=dict(reasons.most_common()),
            )
        )
    return rows
