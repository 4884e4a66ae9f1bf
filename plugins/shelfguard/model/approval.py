"""The approval gate: a recorded decision on one exact (model, index) pair.

``governance.yml`` → ``approval.mode`` says whether a person must decide:

- ``auto`` — the embedded development setup only: the pair is approved by
  policy, recorded with the policy's sha256. Refused on the ``hitl`` backend.
- ``required`` — a person from ``approval.approvers`` decides, and not the one
  who triggered the run. How they are asked is the ``SHELFGUARD_APPROVAL_BACKEND``
  setting:

  - ``ledger`` (default): the task waits for a decision recorded with
    ``shelfguard approve RUN --by NAME`` / ``shelfguard reject``. The task keeps
    its own clock, so the timeout holds even under ``airflow dags test``;
  - ``hitl``: Airflow's :class:`ApprovalOperator` (Required Actions in the UI,
    or its REST API), with the evidence in its body, the approvers as assigned
    users and ``Reject`` as the answer taken at the timeout.

Either way, no answer before ``approval.timeout_minutes`` is recorded as a
rejection (invariant 6), every decision lands in the ledger, and a rejection
fails the task so nothing downstream promotes; the run ends REJECTED.

This module holds the rules and imports no Airflow (``shelfguard approve`` uses it);
the approval tasks are in :mod:`shelfguard.airflow.operators`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shelfguard import signing
from shelfguard.failpoints import failpoint
from shelfguard.ledger import ApprovalRecord, Ledger

if TYPE_CHECKING:
    from datetime import datetime

    from shelfguard.policy import Policy

POLL_SECONDS = 2.0
TIMEOUT_ACTOR = "shelfguard:timeout"
POLICY_ACTOR = "policy"


class ApprovalError(ValueError):
    """A decision that may not be recorded (unknown run, self-approval, not an approver)."""


def pending_pair(ledger: Ledger, run_id: str) -> tuple[str, str]:
    """The (model sha256, index sha256) the run asks approval for."""
    run = ledger.get_run(run_id)
    if run is None:
        raise ApprovalError(f"run {run_id!r} is not in the ledger (see `shelfguard status`)")
    model, index = run.lineage.get("model_sha256"), run.lineage.get("index_sha256")
    if not model or not index:
        raise ApprovalError(
            f"run {run_id} has no model and index to approve yet "
            "(it has not passed the evaluation and index gates)"
        )
    return str(model), str(index)


def record_decision(
    ledger: Ledger,
    policy: Policy,
    run_id: str,
    decision: str,
    decided_by: str,
    *,
    via: str,
    comment: str = "",
    signer: signing.Signer | None = None,
) -> ApprovalRecord:
    """Record a person's decision on the run's pair, after checking they may make it.

    ``decided_by`` must be an approver of ``policy`` (the run's pinned policy) and, to
    approve, not the run's triggerer. On the command line (``via="cli"``) the decision is
    signed by ``signer``, whose key must be the one the policy lists for them; through
    Airflow (``via="hitl"``) the auth manager verified the author.
    """
    model, index = pending_pair(ledger, run_id)
    run = ledger.get_run(run_id)
    assert run is not None
    if not decided_by.strip():
        raise ApprovalError("a decision needs the name of who made it (--by)")
    # Approving and rejecting alike are decisions for an approver of the run's policy.
    approvers = policy.approval.approvers
    if decided_by not in approvers:
        raise ApprovalError(
            f"{decided_by} is not an approver in {policy.path or 'the policy'} "
            f"(approvers: {', '.join(approvers) or 'none'})"
        )
    if decision == "approved" and run.triggered_by and decided_by == run.triggered_by:
        raise ApprovalError(
            f"{decided_by} triggered run {run_id} and may not approve it: "
            "another approver must decide"
        )
    if run.outcome not in ("RUNNING",) and via == "cli":
        raise ApprovalError(f"run {run_id} already ended {run.outcome}: there is nothing to decide")
    decisions = ledger.approvals(run_id)
    if decisions:
        latest = decisions[-1]
        if (latest.decision, latest.decided_by, latest.model_sha256, latest.index_sha256) == (
            decision,
            decided_by,
            model,
            index,
        ):
            return latest  # the same decision again (a retry after a crash): recorded once
    at, envelope = None, None
    if via == "cli":
        from shelfguard.policy_approval import signer_problem

        if signer is None or signer.name != decided_by:
            raise ApprovalError(f"a decision on the command line is signed with {decided_by}'s key")
        verb = "approve" if decision == "approved" else "reject"
        problem = signer_problem(policy, signer, f"{verb} runs")
        if problem:
            raise ApprovalError(problem)
        at = signing.signing_time()
        envelope = signer.sign(
            signing.decision_statement(
                "approve" if decision == "approved" else "reject",
                decided_by,
                at,
                run_id=run_id,
                model_sha256=model,
                index_sha256=index,
                policy_sha256=policy.sha256,
            )
        )
    failpoint("approval.signed")
    return _record(
        ledger,
        policy,
        run_id,
        decision,
        decided_by,
        via=via,
        comment=comment,
        pair=(model, index),
        at=at,
        attestation=envelope,
    )


def _record(
    ledger: Ledger,
    policy: Policy,
    run_id: str,
    decision: str,
    decided_by: str,
    *,
    via: str,
    comment: str,
    pair: tuple[str, str] | None = None,
    at: datetime | None = None,
    attestation: dict[str, Any] | None = None,
) -> ApprovalRecord:
    """The one writer of decisions: on the run's pending pair, bound to ``policy``'s hash."""
    model, index = pair or pending_pair(ledger, run_id)
    return ledger.record_approval(
        run_id,
        decision,
        decided_by,
        model_sha256=model,
        index_sha256=index,
        via=via,
        comment=comment,
        policy_sha256=policy.sha256,
        decided_at=at,
        attestation=attestation,
    )


def approve_by_policy(ledger: Ledger, policy: Policy, run_id: str, why: str) -> ApprovalRecord:
    """Record the approval of ``mode: auto`` (embedded development), bound to the policy's hash."""
    return _record(ledger, policy, run_id, "approved", POLICY_ACTOR, via="policy", comment=why)


def reject_at_timeout(ledger: Ledger, policy: Policy, run_id: str, why: str) -> ApprovalRecord:
    """Record the rejection that no answer before the timeout means (invariant 6)."""
    return _record(
        ledger,
        policy,
        run_id,
        "rejected",
        TIMEOUT_ACTOR,
        via="timeout",
        comment=f"{why}: rejected (fail closed)",
    )


def reject_refused(
    ledger: Ledger, policy: Policy, run_id: str, answered_by: str, *, via: str, why: str
) -> ApprovalRecord:
    """Record as a rejection an answer the policy refused (``why``: an :class:`ApprovalError`):
    an approval from someone who may not give it must not leave the run waiting."""
    return _record(
        ledger, policy, run_id, "rejected", answered_by, via=via, comment=f"refused: {why}"
    )


def wait_for_decision(
    ledger: Ledger,
    policy: Policy,
    run_id: str,
    *,
    timeout_seconds: float,
    poll_seconds: float = POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Any = None,
) -> ApprovalRecord:
    """Wait for a decision on the run's pair; at the timeout record and return a rejection."""
    model, index = pending_pair(ledger, run_id)
    deadline = clock() + timeout_seconds
    next_note = 0.0
    while True:
        decisions = [
            a
            for a in ledger.approvals(run_id)
            if (a.model_sha256, a.index_sha256) == (model, index) and a.via != "policy"
        ]
        if decisions:
            return decisions[-1]
        now = clock()
        if now >= deadline:
            return reject_at_timeout(
                ledger, policy, run_id, f"no answer within {timeout_seconds / 60:g} minutes"
            )
        if log is not None and now >= next_note:
            log.info(
                "waiting for approval of run %s (%.0f s left): "
                "shelfguard approve %s --by NAME | shelfguard reject %s --by NAME",
                run_id,
                deadline - now,
                run_id,
                run_id,
            )
            next_note = now + 60
        sleep(min(poll_seconds, max(deadline - now, 0.01)))


def evidence(ledger: Ledger, run_id: str, report: str | None = None) -> str:
    """The approver's evidence in Markdown: the run's console page, gate verdicts,
    golden-set metrics, and the report (``report``: its address) when there is one."""
    from shelfguard.airflow.evidence_links import run_page_url

    run = ledger.get_run(run_id)
    lines = [
        f"**Run** `{run_id}` — triggered by {run.triggered_by if run else '?'}",
        "",
        f"[The run's evidence in the governance console]({run_page_url(run_id)})",
        "",
    ]
    if run is not None:
        lineage = run.lineage
        lines.append(
            f"Model `{str(lineage.get('model_sha256'))[:16]}` + index "
            f"`{str(lineage.get('index_sha256'))[:16]}`, data snapshot "
            f"`{str(lineage.get('data_snapshot_id'))[:16]}`"
        )
        lines.append("")
    lines += ["| gate | verdict | failed checks |", "|---|---|---|"]
    metrics: Mapping[str, Mapping[str, float]] = {}
    for gate in ledger.gate_results(run_id):
        failed = [str(c.get("name")) for c in gate.checks if c.get("status") != "pass"]
        lines.append(f"| {gate.gate} | {gate.status} | {', '.join(failed) or '-'} |")
        if gate.gate == "evaluation":
            metrics = gate.metrics.get("overall", {})
    if metrics:
        columns = ("ndcg@10", "recall@10", "mrr@10")
        lines += ["", "| ranker | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name in ("challenger", "champion", "base", "bm25"):
            if name in metrics:
                values = " | ".join(f"{metrics[name].get(c, float('nan')):.4f}" for c in columns)
                lines.append(f"| {name} | {values} |")
    if report:
        lines += ["", f"Governance report: {report}"]
    return "\n".join(lines)


__all__: Sequence[str] = (
    "ApprovalError",
    "approve_by_policy",
    "evidence",
    "pending_pair",
    "record_decision",
    "reject_at_timeout",
    "wait_for_decision",
)
