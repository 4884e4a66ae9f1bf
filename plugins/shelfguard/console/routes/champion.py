"""Champion: the current pair, its history as a timeline, and rolling back."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from shelfguard.console.actions import ConsoleRefusal, rollback
from shelfguard.console.auth import Decider, Identity, Reader, may_decide
from shelfguard.console.charts import alias_timeline
from shelfguard.console.deps import LedgerDep, render
from shelfguard.ledger import Ledger, LedgerError
from shelfguard.policy import Policy

router = APIRouter(tags=["champion"])


def _policy_in_force(ledger: Ledger) -> Policy | None:
    from shelfguard.policy_approval import PolicyApprovalError, in_force

    try:
        current = in_force(ledger)
    except PolicyApprovalError:
        return None
    return None if current is None else current.policy


def _may_roll_back(identity: Identity, policy: Policy | None) -> bool:
    return policy is not None and may_decide(identity, list(policy.approval.approvers))


@router.get("/champion", response_class=HTMLResponse)
def champion_page(request: Request, identity: Reader, ledger: LedgerDep) -> HTMLResponse:
    """Where ``champion`` points, every move it made, and (for approvers) rollback buttons."""
    from shelfguard.console.views import champion_page as page

    content = page(ledger)
    policy = _policy_in_force(ledger)
    return render(
        request,
        identity,
        "champion.html",
        page=content,
        timeline=alias_timeline(content.history),
        may_roll_back=_may_roll_back(identity, policy) and content.intact,
    )


@router.post("/champion/rollback")
def roll_back(
    identity: Decider,
    ledger: LedgerDep,
    to_version: Annotated[int, Form()],
    reason: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Move the champion back to an earlier approved pair, authored by the signed-in user."""
    policy = _policy_in_force(ledger)
    if policy is None:
        raise HTTPException(409, "no policy is in force: nobody may roll back")
    if not _may_roll_back(identity, policy):
        raise HTTPException(403, f"{identity.name} is not an approver of the policy in force")
    try:
        rollback(ledger, policy, identity.name, to_version=to_version, reason=reason)
    except ConsoleRefusal as exc:
        raise HTTPException(exc.status, exc.detail) from exc
    except LedgerError as exc:  # the alias moved since the page was read
        raise HTTPException(409, str(exc)) from exc
    return RedirectResponse("../champion", status_code=303)
