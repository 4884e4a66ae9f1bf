"""The console's decisions: approve, reject, roll back — authored by the signed-in user.

The author of a console decision is the user Airflow's auth manager authenticated,
the same verification a Required Action (Airflow's HITL) answer gets, so approvals
and rejections are recorded through :func:`shelfguard.model.approval.record_decision` with
``via="hitl"``: promotion then checks them exactly as it checks an answer given in
Airflow (the run's pinned policy, its approvers, never the run's triggerer).

A rollback from the console moves the alias like ``shelfguard rollback`` does, but
without a personal signature: Airflow verified the author instead. The move is
recorded in ``alias_history`` with ``moved_by`` = the signed-in user and a reason
that names the console, and is hash-chained like every alias move, so
``shelfguard verify`` stays green and an edit of the row is detected. Who may roll
back is unchanged: an approver of the policy in force.
"""

from __future__ import annotations

from dataclasses import dataclass

from shelfguard.ledger import AliasMove, AliasRecord, ApprovalRecord, Ledger, RunRecord
from shelfguard.model import promotion
from shelfguard.model.approval import ApprovalError, record_decision
from shelfguard.model.promotion import ALIAS, PromotionRefused
from shelfguard.policy import Policy

#: What every console decision's comment (or alias move's reason) starts with.
CONSOLE_NOTE = "in the governance console"


class ConsoleRefusal(RuntimeError):
    """A decision the console refuses; ``status`` is the HTTP status that says why."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def waiting_pair(ledger: Ledger, run: RunRecord) -> tuple[str, str] | None:
    """The (model, index) the run waits on a decision for, or None when it waits for none.

    A run waits while it is RUNNING with a model and index recorded and no decision
    on that pair yet (a decision made, the run's approval task moves on by itself).
    """
    model, index = run.lineage.get("model_sha256"), run.lineage.get("index_sha256")
    if run.outcome != "RUNNING" or not model or not index:
        return None
    decided = any(
        (a.model_sha256, a.index_sha256) == (model, index) for a in ledger.approvals(run.run_id)
    )
    return None if decided else (str(model), str(index))


def decide(
    ledger: Ledger, policy: Policy, run_id: str, decision: str, user: str, comment: str = ""
) -> ApprovalRecord:
    """Record ``user``'s decision on the pair ``run_id`` waits for, under its pinned ``policy``.

    Refuses (:class:`ConsoleRefusal`) with 404 for an unknown run, 409 when the run
    waits for no decision, 403 when ``user`` may not make it (not an approver of the
    run's policy, or approving a run they triggered).
    """
    if decision not in ("approved", "rejected"):
        raise ConsoleRefusal(400, f"unknown decision {decision!r}")
    run = ledger.get_run(run_id)
    if run is None:
        raise ConsoleRefusal(404, f"run {run_id} is not in the ledger")
    if waiting_pair(ledger, run) is None:
        raise ConsoleRefusal(409, f"run {run_id} is not waiting for a decision ({run.outcome})")
    note = CONSOLE_NOTE + (f": {comment.strip()}" if comment.strip() else "")
    try:
        return record_decision(ledger, policy, run_id, decision, user, via="hitl", comment=note)
    except ApprovalError as exc:
        raise ConsoleRefusal(403, str(exc)) from exc


@dataclass(frozen=True)
class RollbackTarget:
    """An earlier version of the champion the console may move back to."""

    move: AliasMove
    model_sha256: str
    index_sha256: str


def rollback_targets(ledger: Ledger, current: AliasRecord | None) -> list[RollbackTarget]:
    """Earlier versions whose pair differs from the current one and was approved once,
    newest first (one entry per pair)."""
    if current is None:
        return []
    pair = (current.model.id, current.index.id)
    seen: set[tuple[int, int]] = {pair}
    targets = []
    for move in reversed(ledger.alias_history(ALIAS)):
        key = (move.model_artifact_id, move.index_artifact_id)
        if move.version >= current.version or key in seen:
            continue
        seen.add(key)
        model = ledger.get_artifact(move.model_artifact_id)
        index = ledger.get_artifact(move.index_artifact_id)
        if model is None or index is None:
            continue
        decisions = ledger.approvals_of_pair(model.sha256, index.sha256)
        if any(d.decision == "approved" for d in decisions):
            targets.append(RollbackTarget(move, model.sha256, index.sha256))
    return targets


def rollback(
    ledger: Ledger, policy: Policy, user: str, *, to_version: int, reason: str = ""
) -> AliasRecord:
    """Move ``champion`` back to the pair of ``to_version``, authored by ``user``
    (:func:`shelfguard.model.promotion.rollback` with the identity Airflow verified).

    ``policy`` is the policy in force: only its approvers roll back (else 403). The ledger
    must verify and the target must be an earlier, once-approved pair (else 409).
    """
    if user not in policy.approval.approvers:
        raise ConsoleRefusal(
            403,
            f"{user} is not an approver of the policy in force "
            f"(approvers: {', '.join(policy.approval.approvers) or 'none'})",
        )
    note = f"rollback to version {to_version} {CONSOLE_NOTE}"
    try:
        return promotion.rollback(
            ledger,
            policy,
            verified_user=user,
            to_version=to_version,
            reason=note + (f": {reason.strip()}" if reason.strip() else ""),
        )
    except PromotionRefused as exc:
        raise ConsoleRefusal(409, "; ".join(exc.missing)) from exc
