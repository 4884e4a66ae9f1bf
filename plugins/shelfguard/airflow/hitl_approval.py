"""Approval on the ``hitl`` backend: Airflow's own ApprovalOperator, answered by a person
in Airflow's Required Actions, with the evidence, approvers and timeout of the policy.

Imported only when the ``hitl`` backend is configured (:func:`operators.hitl_operator`):
the standard provider's HITL operators are not needed to parse the DAGs otherwise.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.exceptions import HITLTimeoutError
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk.exceptions import AirflowFailException

from shelfguard.airflow.operators import _context_run, _finish, _report_so_far, _tell_waiting
from shelfguard.model.approval import (
    ApprovalError,
    evidence,
    pending_pair,
    record_decision,
    reject_at_timeout,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


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
