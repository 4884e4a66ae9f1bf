"""The steps both approval operators share (ledger backend in :mod:`.operators`, Airflow's
HITL in :mod:`.hitl_approval`): the run they decide on, the notice that a person is
asked, the report so far, and the task's end once the decision is recorded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from shelfguard.ledger import ApprovalRecord, Ledger
    from shelfguard.policy import Policy


def report_so_far(ledger: Ledger, run_id: str) -> str:
    """The run's governance report as it stands while it waits (rewritten at the end)."""
    from shelfguard.config import load_settings
    from shelfguard.reports import write_report

    return write_report(load_settings(), ledger, run_id).as_uri()


def finish_decision(decision: ApprovalRecord, log: Any) -> dict[str, Any]:
    """The approval task's result: the decision's summary, or the task fails when it was
    not an approval (a rejection ends the run REJECTED, not retried)."""
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


def tell_waiting(ledger: Ledger, policy: Policy, run_id: str, how: str, context: Any) -> None:
    """Tell the policy's channels that this run's pair waits for a person."""
    from shelfguard import notify

    notify.send(policy, notify.approval_notice(ledger, run_id, how), context)


def context_run(context: Mapping[str, Any]) -> tuple[Ledger, Policy, str]:
    """The run's ledger, the policy it pinned when it started, and its ledger id."""
    from shelfguard.run_context import RunContext

    ctx = RunContext.from_airflow(context)
    return ctx.ledger, ctx.policy, ctx.run_id
