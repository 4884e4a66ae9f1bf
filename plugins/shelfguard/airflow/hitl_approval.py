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

from shelfguard.airflow.approval_steps import (
    context_run,
    finish_decision,
    report_so_far,
    tell_waiting,
)
from shelfguard.model.approval import (
    ApprovalError,
    evidence,
    pending_pair,
    record_decision,
    reject_at_timeout,
    reject_refused,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class GovernanceApprovalOperator(ApprovalOperator):  # type: ignore[misc]
    """ApprovalOperator whose evidence, approvers and timeout come from the policy."""

    def execute(self, context: Context) -> Any:
        ledger, policy, run_id = context_run(context)
        if policy.approval.mode == "auto":
            raise AirflowFailException(
                "governance.yml approval.mode is 'auto', which is for the embedded "
                "development setup only: set it to 'required' for the hitl backend"
            )
        pending_pair(ledger, run_id)
        self.subject = f"Promote the search model of {run_id}?"
        self.body = evidence(ledger, run_id, report=report_so_far(ledger, run_id))
        self.response_timeout = timedelta(minutes=policy.approval.timeout_minutes)
        self.assigned_users = [{"id": a, "name": a} for a in policy.approval.approvers]
        tell_waiting(ledger, policy, run_id, "Answer in Airflow: Required Actions", context)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        ledger, policy, run_id = context_run(context)
        try:
            payload = HITLOperator.execute_complete(self, context, event)
        except HITLTimeoutError:
            payload = {"chosen_options": [self.REJECT], "responded_by_user": None}
        user = payload.get("responded_by_user") or {}
        name = str(user.get("name") or user.get("id") or "")
        chosen = payload["chosen_options"][0]
        if not name:
            decision = reject_at_timeout(ledger, policy, run_id, "no answer before the timeout")
            return finish_decision(decision, self.log)
        answer = "approved" if chosen == self.APPROVE else "rejected"
        try:
            decision = record_decision(
                ledger, policy, run_id, answer, name, via="hitl", comment="answered in Airflow"
            )
        except ApprovalError as exc:
            decision = reject_refused(ledger, policy, run_id, name, via="hitl", why=str(exc))
        return finish_decision(decision, self.log)
