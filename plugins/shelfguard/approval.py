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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from shelfguard import signing
from shelfguard.failpoints import failpoint
from shelfguard.ledger import ApprovalRecord, Ledger

if TYPE_CHECKING:
    from airflow.sdk import Context

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
        attestation=envelope,
    )


def approve_by_policy(ledger: Ledger, policy: Policy, run_id: str, why: str) -> ApprovalRecord:
    """Record the approval of ``mode: auto`` (embedded development), bound to the policy's hash."""
    model, index = pending_pair(ledger, run_id)
    return ledger.record_approval(
        run_id,
        "approved",
        POLICY_ACTOR,
        model_sha256=model,
        index_sha256=index,
        via="policy",
        comment=why,
        policy_sha256=policy.sha256,
    )


def reject_at_timeout(ledger: Ledger, policy: Policy, run_id: str, why: str) -> ApprovalRecord:
    """Record the rejection that no answer before the timeout means (invariant 6)."""
    model, index = pending_pair(ledger, run_id)
    return ledger.record_approval(
        run_id,
        "rejected",
        TIMEOUT_ACTOR,
        model_sha256=model,
        index_sha256=index,
        via="timeout",
        comment=f"{why}: rejected (fail closed)",
        policy_sha256=policy.sha256,
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
    from shelfguard.evidence_links import run_page_url

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


def _report_so_far(ledger: Ledger, run_id: str) -> str:
    """The run's governance report as it stands while it waits (rewritten at the end)."""
    from shelfguard.config import load_settings
    from shelfguard.reports import write_report

    return write_report(load_settings(), ledger, run_id).as_uri()


def _finish(decision: ApprovalRecord, log: Any) -> dict[str, Any]:
    summary = {
        "decision": decision.decision,
        "decided_by": decision.decided_by,
        "via": decision.via,
        "comment": decision.comment,
    }
    if decision.decision != "approved":
        raise AirflowFailException(
            f"REJECTED by {decision.decided_by} via {decision.via}: {decision.comment or '-'}"
        )
    log.info("approved by %s via %s", decision.decided_by, decision.via)
    return summary


def _tell_waiting(ledger: Ledger, policy: Policy, run_id: str, how: str, context: Any) -> None:
    """Tell the policy's channels that this run's pair waits for a person."""
    from shelfguard import notify

    notify.send(policy, notify.approval_notice(ledger, run_id, how), context)


def _context_run(context: Mapping[str, Any]) -> tuple[Ledger, Policy, str]:
    """The run's ledger, the policy it pinned when it started, and its ledger id."""
    from shelfguard.run_context import RunContext

    ctx = RunContext.from_airflow(context)
    return ctx.ledger, ctx.policy, ctx.run_id


class LedgerApprovalOperator(BaseOperator):
    """Approval on the ``ledger`` backend: policy ``auto``, or wait for ``shelfguard approve``."""

    ui_color = "#fff4d6"

    def __init__(self, *, index_refresh: bool = False, **kwargs: Any) -> None:
        """``index_refresh``: the pair is the champion model with a refreshed index."""
        super().__init__(**kwargs)
        self.index_refresh = index_refresh

    def execute(self, context: Context) -> dict[str, Any]:
        """Record the policy's approval or wait (with a real timeout) for a person's decision."""
        ledger, policy, run_id = _context_run(context)
        mode = policy.approval.index_refresh if self.index_refresh else policy.approval.mode
        if mode == "auto":
            why = (
                "index rebuilt with the approved champion model; index gate passed"
                if self.index_refresh
                else "approval.mode is auto (embedded development)"
            )
            return _finish(approve_by_policy(ledger, policy, run_id, why), self.log)
        self.log.info("%s", evidence(ledger, run_id))
        _tell_waiting(
            ledger, policy, run_id, f"Answer: shelfguard approve|reject {run_id} --by NAME", context
        )
        decision = wait_for_decision(
            ledger,
            policy,
            run_id,
            timeout_seconds=policy.approval.timeout_minutes * 60,
            log=self.log,
        )
        return _finish(decision, self.log)


def hitl_operator(task_id: str, **kwargs: Any) -> BaseOperator:
    """Approval on the ``hitl`` backend: Airflow's ApprovalOperator, answered by a person."""
    from airflow.providers.standard.exceptions import HITLTimeoutError
    from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator

    class GovernanceApprovalOperator(ApprovalOperator):  # type: ignore[misc]
        """ApprovalOperator whose evidence, approvers and timeout come from the policy."""

        def execute(self, context: Context) -> Any:
            ledger, policy, run_id = _context_run(context)
            if policy.approval.mode == "auto":
                raise AirflowFailException(
                    "governance.yml approval.mode is 'auto', which is for the embedded "
                    "development setup only: set it to 'required' for the hitl backend"
                )
            pending_pair(ledger, run_id)
            self.subject = f"Promote the search model of {run_id}?"
            self.body = evidence(ledger, run_id, report=_report_so_far(ledger, run_id))
            self.response_timeout = timedelta(minutes=policy.approval.timeout_minutes)
            self.assigned_users = [{"id": a, "name": a} for a in policy.approval.approvers]
            _tell_waiting(ledger, policy, run_id, "Answer in Airflow: Required Actions", context)
            return super().execute(context)

        def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
            ledger, policy, run_id = _context_run(context)
            model, index = pending_pair(ledger, run_id)
            try:
                payload = HITLOperator.execute_complete(self, context, event)
            except HITLTimeoutError:
                payload = {"chosen_options": [self.REJECT], "responded_by_user": None}
            user = payload.get("responded_by_user") or {}
            name = str(user.get("name") or user.get("id") or "")
            chosen = payload["chosen_options"][0]
            if not name:
                decision = reject_at_timeout(ledger, policy, run_id, "no answer before the timeout")
                return _finish(decision, self.log)
            answer = "approved" if chosen == self.APPROVE else "rejected"
            try:
                decision = record_decision(
                    ledger, policy, run_id, answer, name, via="hitl", comment="answered in Airflow"
                )
            except ApprovalError as exc:
                decision = ledger.record_approval(
                    run_id,
                    "rejected",
                    name,
                    model_sha256=model,
                    index_sha256=index,
                    via="hitl",
                    comment=f"refused: {exc}",
                    policy_sha256=policy.sha256,
                )
            return _finish(decision, self.log)

    return GovernanceApprovalOperator(
        task_id=task_id,
        subject="Promote the search model?",
        defaults="Reject",
        response_timeout=timedelta(days=1),
        **kwargs,
    )


def approval_operator(task_id: str, *, index_refresh: bool = False, **kwargs: Any) -> BaseOperator:
    """The approval task on the configured backend (call in a DAG file)."""
    from shelfguard.config import load_settings

    if load_settings().approval_backend == "hitl" and not index_refresh:
        return hitl_operator(task_id, **kwargs)
    return LedgerApprovalOperator(task_id=task_id, index_refresh=index_refresh, **kwargs)


__all__: Sequence[str] = (
    "ApprovalError",
    "LedgerApprovalOperator",
    "approval_operator",
    "approve_by_policy",
    "evidence",
    "pending_pair",
    "record_decision",
    "reject_at_timeout",
    "wait_for_decision",
)
