"""Approvals: the runs waiting for a decision, and deciding on one as the signed-in user."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from shelfguard.console.actions import ConsoleRefusal, decide
from shelfguard.console.auth import Decider, Reader, may_decide, may_read_dag
from shelfguard.console.deps import LedgerDep, readable_dags, render, run_href
from shelfguard.console.views import pending_runs

router = APIRouter(tags=["approvals"])


@router.get("/approvals", response_class=HTMLResponse)
def approvals_page(request: Request, identity: Reader, ledger: LedgerDep) -> HTMLResponse:
    """Pending runs with their evidence; decision buttons only for those who may decide."""
    pending = pending_runs(ledger, readable_dags(identity, ledger))
    deciders = {p.run.run_id: may_decide(identity, p.approvers) for p in pending}
    return render(request, identity, "approvals.html", pending=pending, deciders=deciders)


@router.post("/approvals/decide")
def decide_run(
    identity: Decider,
    ledger: LedgerDep,
    run_id: Annotated[str, Form()],
    decision: Annotated[str, Form()],
    comment: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Record the signed-in user's approval or rejection of the run's (model, index) pair."""
    from shelfguard.run_context import RunContext, RunContextError

    run = ledger.get_run(run_id)
    if run is None or not may_read_dag(identity, run.dag_id):
        raise HTTPException(404, f"no run {run_id} in the ledger")
    try:
        policy = RunContext.for_run(run_id, ledger=ledger).policy
    except RunContextError as exc:
        raise HTTPException(409, str(exc)) from exc
    if not may_decide(identity, list(policy.approval.approvers)):
        raise HTTPException(
            403, f"{identity.name} is not an approver of the policy run {run_id} pinned"
        )
    try:
        decide(ledger, policy, run_id, decision, identity.name, comment)
    except ConsoleRefusal as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    # Back to the run (a relative path from /approvals/decide), where the decision shows.
    return RedirectResponse("../" + run_href(run_id), status_code=303)
