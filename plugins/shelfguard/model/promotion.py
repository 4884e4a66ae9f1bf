"""Promotion and rollback: the ``champion`` alias moves only on evidence in the ledger.

Promotion never looks at Airflow task states — a task can be marked "success"
in the UI. :func:`check_promotion` re-reads the ledger and lists everything
missing for the run's exact artifacts:

- every gate in ``required_gates`` passed: the data gates (``ingest``,
  ``raw_data``, ``training_data``…) for the data snapshot the model was trained
  on, ``evaluation`` for the model's sha256, ``index`` for the index's sha256;
  a failed verdict of a required gate in the run itself also refuses;
- the index was built by that model (invariant 3);
- the latest decision on that (model, index) pair in the run is an approval,
  by policy only where the policy in force allows it, and never by the person
  who triggered the run.

Only then :func:`promote` moves the alias to (model, index) in one transaction
(:meth:`shelfguard.ledger.Ledger.move_alias`, with an optimistic version check).
:func:`rollback` moves it back to an earlier approved pair, recorded the same way.
Both refuse first when the ledger fails verification (its hash chain, see
docs/ledger.md "Tamper evidence"), naming the first bad row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shelfguard import signing
from shelfguard.failpoints import failpoint
from shelfguard.ledger import (
    AliasMove,
    AliasRecord,
    ApprovalRecord,
    ArtifactRecord,
    Ledger,
    LedgerTampered,
    RunRecord,
)
from shelfguard.policy import Policy

ALIAS = "champion"
NONE = "(none recorded)"


class PromotionRefused(RuntimeError):
    """Promotion (or rollback) is not allowed; ``missing`` lists every reason."""

    def __init__(self, run_id: str, missing: list[str], *, tampered: bool = False) -> None:
        self.run_id = run_id
        self.missing = missing
        #: True when the refusal is because the ledger failed verification.
        self.tampered = tampered
        super().__init__(
            f"promotion of {run_id} refused:\n" + "\n".join(f"  - {m}" for m in missing)
        )


@dataclass(frozen=True)
class Candidate:
    """What a run would promote, once every check passed."""

    run: RunRecord
    snapshot_id: str
    model: ArtifactRecord
    index: ArtifactRecord
    approval: ApprovalRecord


def require_intact_ledger(ledger: Ledger, what: str) -> None:
    """Refuse (:class:`PromotionRefused`, ``tampered=True``) unless the ledger verifies.

    The evidence promotion and rollback decide from is only trusted once the hash
    chain over gate verdicts, approvals and alias moves checks out.
    """
    try:
        ledger.require_intact()
    except LedgerTampered as exc:
        raise PromotionRefused(what, [f"{exc} (run `shelfguard verify`)"], tampered=True) from exc


def _passed(ledger: Ledger, gate: str, subject: str) -> bool:
    """The newest verdict of ``gate`` on ``subject``, in any run, is a pass."""
    results = ledger.gates_on_subject(gate, subject)
    return bool(results) and results[-1].status in ("pass", "warn")


def _source_runs(ledger: Ledger, snapshot_id: str) -> list[str]:
    """Runs whose training-data gate passed on this data snapshot (newest first)."""
    return [
        g.run_id
        for g in reversed(ledger.gates_on_subject("training_data", f"data:{snapshot_id}"))
        if g.status in ("pass", "warn")
    ]


def _data_gate_passed(ledger: Ledger, gate: str, source_runs: list[str]) -> bool:
    """A data gate passed in a run that produced (and gated) the snapshot."""
    for run_id in source_runs:
        results = [g for g in ledger.gate_results(run_id) if g.gate == gate]
        if results and all(g.status in ("pass", "warn") for g in results):
            return True
    return False


def latest_decision(
    ledger: Ledger, run_id: str, model_sha256: str, index_sha256: str
) -> ApprovalRecord | None:
    """The newest decision on this pair in this run (a changed mind counts, not the first)."""
    decisions = [
        a
        for a in ledger.approvals(run_id)
        if a.model_sha256 == model_sha256 and a.index_sha256 == index_sha256
    ]
    return decisions[-1] if decisions else None


def _approval_problems(
    approval: ApprovalRecord | None, run: RunRecord, policy: Policy
) -> list[str]:
    if approval is None:
        return ["approval: no decision is recorded for this model + index"]
    if approval.decision != "approved":
        return [f"approval: {approval.decided_by} rejected it ({approval.comment or 'no comment'})"]
    problems = []
    if approval.via == "policy" and (
        policy.approval.mode != "auto" or approval.policy_sha256 != policy.sha256
    ):
        problems.append(
            "approval: approved by policy, but the policy in force requires a person"
            if policy.approval.mode != "auto"
            else "approval: approved by a policy that is no longer the one in force"
        )
    if approval.via != "policy" and run.triggered_by and approval.decided_by == run.triggered_by:
        problems.append(f"approval: {approval.decided_by} triggered the run and may not approve it")
    if approval.via in ("cli", "hitl"):
        if approval.policy_sha256 != policy.sha256:
            problems.append(
                f"approval: {approval.decided_by} approved under policy "
                f"{(approval.policy_sha256 or 'none')[:12]}, not the run's "
                f"{(policy.sha256 or 'none')[:12]}"
            )
        if approval.decided_by not in policy.approval.approvers:
            problems.append(
                f"approval: {approval.decided_by} is not an approver of the run's policy"
            )
    if approval.via == "cli":
        problems.extend(_signature_problems(approval, policy))
    return problems


def _signature_problems(approval: ApprovalRecord, policy: Policy) -> list[str]:
    """A command-line decision must carry its author's signature, made with the key the
    run's policy lists for them, over exactly what the ledger records."""
    expected = signing.approval_statement(approval)
    problem = signing.check_envelope(
        approval.attestation, expected, policy.approval.key_of(approval.decided_by)
    )
    return [] if problem is None else [f"approval: {approval.decided_by}'s signature: {problem}"]


def online_subject(model_sha256: str, index_sha256: str) -> str:
    """What the online gate judges: a (model, index) pair as shoppers met it."""
    return f"pair:{model_sha256}:{index_sha256}"


def _gate_problems(
    ledger: Ledger,
    policy: Policy,
    run_id: str,
    snapshot: str | None,
    model_sha: str | None,
    index_sha: str | None,
    online: bool = True,
) -> list[str]:
    """Every required gate without a passing verdict for the exact artifacts."""
    missing = []
    sources = _source_runs(ledger, snapshot) if snapshot else []
    gates: list[str] = list(policy.required_gates)
    current = ledger.get_alias(ALIAS)
    # A canary is required: a new model meets shoppers first. An index rebuilt with the
    # champion's own model (catalog_refresh) changes no model, and needs none.
    if (
        online
        and policy.canary.required
        and current is not None
        and current.model.sha256 != model_sha
    ):
        gates.append("online")
    for gate in gates:
        if gate == "training_data":
            ok = bool(sources)
            subject = f"data:{snapshot or NONE}"
        elif gate == "evaluation":
            subject = f"model:{model_sha or NONE}"
            ok = bool(model_sha) and _passed(ledger, gate, subject)
        elif gate == "index":
            subject = f"index:{index_sha or NONE}"
            ok = bool(index_sha) and _passed(ledger, gate, subject)
        elif gate == "online":
            subject = online_subject(model_sha or NONE, index_sha or NONE)
            ok = bool(model_sha and index_sha) and _passed(ledger, gate, subject)
        else:
            subject = f"the runs that gated data:{snapshot or NONE}"
            ok = _data_gate_passed(ledger, gate, [run_id, *sources])
        if not ok:
            missing.append(f"gate {gate}: no passing verdict for {subject}")
    failed_here = sorted(
        {g.gate for g in ledger.gate_results(run_id) if g.status == "fail" and g.gate in gates}
    )
    missing.extend(f"gate {gate}: failed in this run" for gate in failed_here)
    return missing


def _artifact_problems(
    model: ArtifactRecord | None,
    index: ArtifactRecord | None,
    model_sha: str | None,
    index_sha: str | None,
) -> list[str]:
    missing = []
    if model_sha and model is None:
        missing.append(f"artifact: model {model_sha[:12]} is not registered")
    if index_sha and index is None:
        missing.append(f"artifact: index {index_sha[:12]} is not registered")
    if index is not None and model_sha and index.meta.get("model_sha256") != model_sha:
        missing.append(
            f"pairing: index {index.sha256[:12]} was built by model "
            f"{str(index.meta.get('model_sha256'))[:12]}, not {model_sha[:12]}"
        )
    return missing


def check_promotion(
    ledger: Ledger, policy: Policy, run_id: str, *, online: bool = True
) -> Candidate:
    """Everything promotion needs for ``run_id``, or :class:`PromotionRefused` listing what is missing.

    A ledger that fails verification (:meth:`Ledger.verify`) refuses first, naming the bad row.
    With ``policy.canary.required`` and a champion with another model in place, a passing
    online gate on the pair is needed too, unless ``online`` is False (what a canary
    itself needs to start); an index rebuilt with the champion's model needs none.
    """
    require_intact_ledger(ledger, run_id)
    run = ledger.get_run(run_id)
    if run is None:
        raise PromotionRefused(run_id, [f"run {run_id} is not in the ledger"])
    lineage = run.lineage
    missing: list[str] = []
    snapshot = lineage.get("data_snapshot_id")
    model_sha = lineage.get("model_sha256")
    index_sha = lineage.get("index_sha256")
    for key, value in (
        ("data snapshot", snapshot),
        ("model", model_sha),
        ("index", index_sha),
    ):
        if not value:
            missing.append(f"lineage: the run recorded no {key}")
    model = ledger.find_artifact("model", model_sha) if model_sha else None
    index = ledger.find_artifact("index", index_sha) if index_sha else None
    missing.extend(_artifact_problems(model, index, model_sha, index_sha))
    missing.extend(_gate_problems(ledger, policy, run_id, snapshot, model_sha, index_sha, online))
    approval = (
        latest_decision(ledger, run_id, model_sha, index_sha) if model_sha and index_sha else None
    )
    missing.extend(_approval_problems(approval, run, policy))
    if missing or model is None or index is None or approval is None or not snapshot:
        raise PromotionRefused(run_id, missing or ["incomplete evidence"])
    return Candidate(run=run, snapshot_id=snapshot, model=model, index=index, approval=approval)


def promote(ledger: Ledger, policy: Policy, run_id: str) -> AliasRecord:
    """Check the evidence, then move ``champion`` to the run's (model, index) in one transaction."""
    before = ledger.get_alias(ALIAS)
    candidate = check_promotion(ledger, policy, run_id)
    return move_to(ledger, ALIAS, candidate, before, "every required gate passed", "promote")


def move_to(
    ledger: Ledger,
    alias: str,
    candidate: Candidate,
    before: AliasRecord | None,
    why: str,
    action: str,
) -> AliasRecord:
    """Move ``alias`` to a checked candidate's pair, in the name of its approver.

    ``before`` is the alias as read before the checks: a move by anyone else since then
    makes this one fail instead of overwriting it.
    """
    approval = candidate.approval
    return ledger.move_alias(
        alias,
        candidate.model.id,
        candidate.index.id,
        moved_by=approval.decided_by,
        reason=f"run {candidate.run.run_id}: {why}; approved by {approval.decided_by} via {approval.via}",
        action=action,
        run_id=candidate.run.run_id,
        expected_version=0 if before is None else before.version,
    )


def _approved(ledger: Ledger, model_sha256: str, index_sha256: str) -> bool:
    decisions = ledger.approvals_of_pair(model_sha256, index_sha256)
    return bool(decisions) and any(d.decision == "approved" for d in decisions)


def _rollback_author_problem(
    policy: Policy, signer: signing.Signer | None, verified_user: str | None
) -> str | None:
    """Why this author may not roll back under ``policy`` (None: they may)."""
    from shelfguard.policy_approval import signer_problem

    if (signer is None) == (verified_user is None):
        raise ValueError("a rollback has one author: give signer or verified_user")
    if signer is not None:
        return signer_problem(policy, signer, "roll back the champion")
    if verified_user not in policy.approval.approvers:
        approvers = ", ".join(policy.approval.approvers) or "none"
        return f"{verified_user} is not an approver of the policy in force (approvers: {approvers})"
    return None


def _already_at(history: Sequence[AliasMove], current: AliasRecord, to_version: int | None) -> bool:
    """Whether the champion already holds the pair of ``to_version`` through a rollback
    made after that version (so asking for it again changes nothing)."""
    if to_version is None:
        return False
    pair = (current.model.id, current.index.id)
    for move in history:
        if move.version == to_version:
            return (move.model_artifact_id, move.index_artifact_id) == pair and any(
                m.action == "rollback" and m.version == current.version for m in history
            )
    return False


def _rollback_target(
    history: Sequence[AliasMove], current: AliasRecord, to_version: int | None
) -> AliasMove:
    """The earlier alias move to go back to: ``to_version``, else the newest earlier pair."""
    pair = (current.model.id, current.index.id)
    earlier = [
        m
        for m in history
        if m.version < current.version and (m.model_artifact_id, m.index_artifact_id) != pair
    ]
    if to_version is None:
        if not earlier:
            raise PromotionRefused(
                "rollback", ["the champion has no earlier version to go back to"]
            )
        return earlier[-1]
    if not any(m.version == to_version for m in history):
        versions = ", ".join(str(m.version) for m in history)
        raise PromotionRefused(
            "rollback", [f"champion has no version {to_version} (versions: {versions})"]
        )
    for move in earlier:
        if move.version == to_version:
            return move
    raise PromotionRefused(
        "rollback",
        [f"version {to_version} is not an earlier pair of the champion than the current one"],
    )


def rollback(
    ledger: Ledger,
    policy: Policy,
    *,
    signer: signing.Signer | None = None,
    verified_user: str | None = None,
    to_version: int | None = None,
    reason: str = "",
) -> AliasRecord:
    """Move ``champion`` back to the pair of an earlier version (default: the one before now).

    Only an approver of ``policy`` (the policy in force) may roll back. The author is
    either a ``signer`` (``shelfguard rollback``: the move carries their signature, made
    with the key the policy lists for them) or a ``verified_user`` whose identity Airflow's
    auth manager verified (the governance console): exactly one of the two. The target
    must be an earlier version whose pair differs from the current one and was approved
    once; the move is recorded in ``alias_history`` as a rollback. A ledger that fails
    verification refuses before anything is read from it.
    """
    problem = _rollback_author_problem(policy, signer, verified_user)
    if problem:
        raise PromotionRefused("rollback", [problem])
    require_intact_ledger(ledger, "rollback")
    current = ledger.get_alias(ALIAS)
    if current is None:
        raise PromotionRefused("rollback", ["there is no champion to roll back"])
    history = ledger.alias_history(ALIAS)
    if _already_at(history, current, to_version):
        return current  # the rollback was made (a rerun after a crash, a form sent twice)
    target = _rollback_target(history, current, to_version)
    model = ledger.get_artifact(target.model_artifact_id)
    index = ledger.get_artifact(target.index_artifact_id)
    if model is None or index is None:
        raise PromotionRefused(
            "rollback", [f"version {target.version} points at missing artifacts"]
        )
    if not _approved(ledger, model.sha256, index.sha256):
        raise PromotionRefused(
            "rollback", [f"version {target.version}'s model + index pair was never approved"]
        )
    at = signing.signing_time()
    envelope = None
    if signer is not None:
        envelope = signer.sign(
            signing.rollback_statement(
                signer.name,
                at,
                alias=ALIAS,
                version=current.version + 1,
                model_sha256=model.sha256,
                index_sha256=index.sha256,
                policy_sha256=policy.sha256,
            )
        )
    failpoint("rollback.signed")
    return ledger.move_alias(
        ALIAS,
        model.id,
        index.id,
        moved_by=signer.name if signer is not None else str(verified_user),
        reason=reason or f"rollback to version {target.version}",
        action="rollback",
        run_id=target.run_id,
        expected_version=current.version,
        moved_at=at,
        attestation=envelope,
    )
