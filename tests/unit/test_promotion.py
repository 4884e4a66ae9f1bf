"""Promotion reads the ledger, lists what is missing, and moves model + index together."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from signing_support import approvers, signer

from shelfguard.ledger import ApprovalRecord, Ledger, open_ledger
from shelfguard.model.approval import (
    ApprovalError,
    approve_by_policy,
    record_decision,
    wait_for_decision,
)
from shelfguard.model.promotion import PromotionRefused, check_promotion, promote, rollback
from shelfguard.policy import CanaryPolicy, Policy, parse_policy

GATES = ["ingest", "raw_data", "training_data", "evaluation", "index"]


_TEXTS: dict[str, str] = {}


def policy(mode: str = "required", **approval: object) -> Policy:
    """A policy as a run pins it: parsed from the text the ledger keeps."""
    text = json.dumps(
        {
            "version": 1,
            "required_gates": GATES,
            "approval": {"mode": mode, "approvers": approvers("alice", "bob"), **approval},
        }
    )
    parsed = parse_policy(text.encode(), "governance.yml")
    _TEXTS[parsed.sha256] = text
    return parsed


def decide(ledger: Ledger, pol: Policy, *args: Any, **kwargs: Any) -> ApprovalRecord:
    """``record_decision`` under a policy the ledger holds (as a run's pinned policy is)."""
    ledger.pin_policy(pol.sha256, _TEXTS[pol.sha256], pol.path)
    return record_decision(ledger, pol, *args, **kwargs)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def refresh_run(ledger: Ledger, snapshot: str = "snap1") -> str:
    """A catalog_refresh run whose data gates passed on ``snapshot``."""
    run_id = f"catalog_refresh/{snapshot}"
    ledger.start_run(run_id, "catalog_refresh", triggered_by="cron", lineage={})
    ledger.record_gate(run_id, "ingest", "pass", subject="batch:1")
    ledger.record_gate(run_id, "raw_data", "pass", subject="batch:1")
    ledger.record_gate(run_id, "training_data", "pass", subject=f"data:{snapshot}")
    return run_id


def retraining_run(
    ledger: Ledger,
    name: str,
    *,
    snapshot: str = "snap1",
    evaluation: str = "pass",
    index_gate: str = "pass",
    index_model: str | None = None,
) -> str:
    """A retraining run that trained model ``m-<name>`` and built index ``i-<name>``."""
    run_id = f"search_model_retraining/{name}"
    model, index = f"m-{name}", f"i-{name}"
    ledger.start_run(run_id, "search_model_retraining", triggered_by="carol", lineage={})
    ledger.record_gate(run_id, "training_data", "pass", subject=f"data:{snapshot}")
    ledger.record_artifact("model", f"/models/{name}", model, produced_by_run=run_id)
    ledger.record_artifact(
        "index",
        f"/indexes/{name}",
        index,
        produced_by_run=run_id,
        meta={"model_sha256": index_model or model},
    )
    ledger.update_lineage(run_id, data_snapshot_id=snapshot, model_sha256=model, index_sha256=index)
    ledger.record_gate(run_id, "evaluation", evaluation, subject=f"model:{model}")
    ledger.record_gate(run_id, "index", index_gate, subject=f"index:{index}")
    return run_id


def test_nothing_recorded_lists_every_missing_piece(ledger: Ledger) -> None:
    ledger.start_run("search_model_retraining/empty", "search_model_retraining", lineage={})
    with pytest.raises(PromotionRefused) as refused:
        check_promotion(ledger, policy(), "search_model_retraining/empty")
    text = "\n".join(refused.value.missing)
    for piece in ("data snapshot", "no model", "no index", "approval: no decision"):
        assert piece in text
    for gate in GATES:
        assert f"gate {gate}:" in text


def test_approved_run_promotes_model_and_index_together(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "a")
    decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
    alias = promote(ledger, policy(), run_id)
    assert (alias.version, alias.model.sha256, alias.index.sha256) == (1, "m-a", "i-a")
    (move,) = ledger.alias_history()
    assert (move.action, move.moved_by, move.run_id) == ("promote", "alice", run_id)
    # A retried promotion is a no-op: no second version.
    assert promote(ledger, policy(), run_id).version == 1


def test_failed_gate_refuses_even_when_approved(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "bad", evaluation="fail")
    decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
    with pytest.raises(PromotionRefused) as refused:
        promote(ledger, policy(), run_id)
    assert "gate evaluation: no passing verdict for model:m-bad" in refused.value.missing
    assert "gate evaluation: failed in this run" in refused.value.missing
    assert ledger.get_alias("champion") is None


def test_data_gates_must_have_passed_for_the_snapshot_trained_on(ledger: Ledger) -> None:
    refresh_run(ledger, "snap1")
    run_id = retraining_run(ledger, "x", snapshot="snap2")
    decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
    with pytest.raises(PromotionRefused) as refused:
        check_promotion(ledger, policy(), run_id)
    missing = refused.value.missing
    assert any(m.startswith("gate ingest:") for m in missing)
    assert any(m.startswith("gate raw_data:") for m in missing)


def test_index_built_by_another_model_is_refused(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "mixed", index_model="m-other")
    decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
    with pytest.raises(PromotionRefused) as refused:
        check_promotion(ledger, policy(), run_id)
    assert any(m.startswith("pairing: index i-mixed") for m in refused.value.missing)


def test_rejection_and_changed_mind(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "r")
    decide(
        ledger,
        policy(),
        run_id,
        "rejected",
        "bob",
        via="cli",
        signer=signer("bob"),
        comment="not now",
    )
    with pytest.raises(PromotionRefused, match="bob rejected it"):
        promote(ledger, policy(), run_id)
    decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
    assert promote(ledger, policy(), run_id).model.sha256 == "m-r"


def test_who_may_decide(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "who")
    with_carol = policy(approvers=approvers("alice", "bob", "carol"))
    with pytest.raises(ApprovalError, match="carol triggered run"):
        decide(ledger, with_carol, run_id, "approved", "carol", via="cli", signer=signer("carol"))
    with pytest.raises(ApprovalError, match="mallory is not an approver"):
        decide(ledger, policy(), run_id, "approved", "mallory", via="cli", signer=signer("mallory"))
    with pytest.raises(ApprovalError, match="not in the ledger"):
        decide(ledger, policy(), "nope", "approved", "alice", via="cli", signer=signer("alice"))
    # Rejecting is a decision too: a non-approver cannot end a run REJECTED.
    with pytest.raises(ApprovalError, match="mallory is not an approver"):
        decide(ledger, policy(), run_id, "rejected", "mallory", via="cli", signer=signer("mallory"))
    assert ledger.approvals(run_id) == []


def test_an_approval_under_another_policy_is_refused_at_promotion(ledger: Ledger) -> None:
    # mallory is listed only in a policy file made for the purpose.
    refresh_run(ledger)
    run_id = retraining_run(ledger, "forged")
    forged = policy(approvers=approvers("mallory"))
    decide(ledger, forged, run_id, "approved", "mallory", via="cli", signer=signer("mallory"))
    with pytest.raises(PromotionRefused) as refused:
        check_promotion(ledger, policy(), run_id)
    missing = refused.value.missing
    assert any(
        f"approved under policy {forged.sha256[:12]}, not the run's {policy().sha256[:12]}" in m
        for m in missing
    )
    assert any("mallory is not an approver of the run's policy" in m for m in missing)
    assert ledger.get_alias("champion") is None


def test_only_an_approver_may_roll_back(ledger: Ledger) -> None:
    refresh_run(ledger)
    first, second = retraining_run(ledger, "r1"), retraining_run(ledger, "r2")
    for run_id in (first, second):
        decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
        promote(ledger, policy(), run_id)
    with pytest.raises(PromotionRefused, match="mallory is not an approver"):
        rollback(ledger, policy(), signer=signer("mallory"))
    assert ledger.get_alias().model.sha256 == "m-r2"  # type: ignore[union-attr]


def test_policy_approval_counts_only_while_the_policy_says_auto(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "auto")
    approve_by_policy(ledger, policy("auto"), run_id, "embedded development")
    with pytest.raises(PromotionRefused, match="the policy in force requires a person"):
        check_promotion(ledger, policy("required"), run_id)
    changed = policy("auto").model_copy(update={"sha256": "q" * 64})
    with pytest.raises(PromotionRefused, match="no longer the one in force"):
        check_promotion(ledger, changed, run_id)
    assert promote(ledger, policy("auto"), run_id).version == 1


def test_no_answer_before_the_timeout_is_a_rejection(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "late")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    decision = wait_for_decision(
        ledger, policy(), run_id, timeout_seconds=30, clock=lambda: now[0], sleep=sleep
    )
    assert (decision.decision, decision.via) == ("rejected", "timeout")
    assert now[0] >= 30
    with pytest.raises(PromotionRefused, match="rejected it"):
        promote(ledger, policy(), run_id)


def test_a_decision_ends_the_wait(ledger: Ledger) -> None:
    refresh_run(ledger)
    run_id = retraining_run(ledger, "quick")
    calls = []

    def sleep(seconds: float) -> None:
        calls.append(seconds)
        decide(ledger, policy(), run_id, "approved", "bob", via="cli", signer=signer("bob"))

    decision = wait_for_decision(ledger, policy(), run_id, timeout_seconds=3600, sleep=sleep)
    assert (decision.decision, decision.decided_by, len(calls)) == ("approved", "bob", 1)


def test_rollback_goes_back_to_the_previous_approved_pair(ledger: Ledger) -> None:
    refresh_run(ledger)
    first, second = retraining_run(ledger, "v1"), retraining_run(ledger, "v2")
    for run_id in (first, second):
        decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
        promote(ledger, policy(), run_id)
    assert ledger.get_alias().model.sha256 == "m-v2"  # type: ignore[union-attr]
    back = rollback(ledger, policy(), signer=signer("bob"), reason="v2 answers worse")
    assert (back.version, back.model.sha256, back.index.sha256) == (3, "m-v1", "i-v1")
    assert ledger.alias_history()[-1].action == "rollback"
    forward = rollback(ledger, policy(), signer=signer("bob"), to_version=2)
    assert forward.model.sha256 == "m-v2"
    with pytest.raises(PromotionRefused, match="no version 9"):
        rollback(ledger, policy(), signer=signer("bob"), to_version=9)


def test_a_verified_user_rolls_back_once_and_asking_again_changes_nothing(
    ledger: Ledger,
) -> None:
    refresh_run(ledger)
    first, second = retraining_run(ledger, "v1"), retraining_run(ledger, "v2")
    for run_id in (first, second):
        decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
        promote(ledger, policy(), run_id)
    with pytest.raises(PromotionRefused, match="mallory is not an approver"):
        rollback(ledger, policy(), verified_user="mallory", to_version=1)
    with pytest.raises(PromotionRefused, match="not an earlier pair"):
        rollback(ledger, policy(), verified_user="bob", to_version=2)
    back = rollback(ledger, policy(), verified_user="bob", to_version=1)
    assert (back.version, back.model.sha256) == (3, "m-v1")
    move = ledger.alias_history()[-1]
    assert (move.action, move.moved_by, move.attestation) == ("rollback", "bob", None)
    again = rollback(ledger, policy(), verified_user="bob", to_version=1)
    assert again.version == 3 and len(ledger.alias_history()) == 3
    with pytest.raises(ValueError, match="one author"):
        rollback(ledger, policy(), signer=signer("bob"), verified_user="bob")


def test_rollback_without_history_is_refused(ledger: Ledger) -> None:
    with pytest.raises(PromotionRefused, match="no champion"):
        rollback(ledger, policy(), signer=signer("bob"))
    refresh_run(ledger)
    run_id = retraining_run(ledger, "only")
    decide(ledger, policy(), run_id, "approved", "alice", via="cli", signer=signer("alice"))
    promote(ledger, policy(), run_id)
    with pytest.raises(PromotionRefused, match="no earlier version"):
        rollback(ledger, policy(), signer=signer("bob"))


def test_a_canary_needs_a_champion_and_the_evidence_of_a_promotion(ledger: Ledger) -> None:
    from shelfguard.model import canary

    refresh_run(ledger)
    first, second = retraining_run(ledger, "a"), retraining_run(ledger, "b")
    with pytest.raises(canary.CanaryError, match="no champion yet"):
        canary.start(ledger, policy(), first)
    decide(ledger, policy(), first, "approved", "alice", via="cli", signer=signer("alice"))
    promote(ledger, policy(), first)
    with pytest.raises(canary.CanaryError, match=r"(?s)cannot be a canary.*approval: no decision"):
        canary.start(ledger, policy(), second)
    with pytest.raises(canary.CanaryError, match="already the champion"):
        canary.start(ledger, policy(), first)
    decide(ledger, policy(), second, "approved", "bob", via="cli", signer=signer("bob"))
    started = canary.start(ledger, policy(), second)
    assert (started.name, started.model.sha256, started.index.sha256) == ("canary", "m-b", "i-b")
    assert ledger.get_alias("champion").model.sha256 == "m-a"  # type: ignore[union-attr]

    ended = canary.end(ledger, by="policy", reason="the online gate: challenger lost")
    assert ended is not None and (ended.model.sha256, ended.index.sha256) == ("m-a", "i-a")
    assert [(m.action, m.moved_by) for m in ledger.alias_history("canary")] == [
        ("canary_start", "bob"),
        ("canary_end", "policy"),
    ]
    # Ending again changes nothing; the chain holds every move.
    assert canary.end(ledger, by="policy", reason="again") is None
    assert len(ledger.alias_history("canary")) == 2
    assert ledger.verify().ok
    # The ended canary names the champion's pair of its time; once the champion moves on
    # (an index refresh, a rollback), that old pair is still no canary.
    third = retraining_run(ledger, "c")
    decide(ledger, policy(), third, "approved", "alice", via="cli", signer=signer("alice"))
    promote(ledger, policy(), third)
    assert canary.running(ledger) is None
    with pytest.raises(canary.CanaryError, match="no canary is running"):
        canary.evidence(ledger, Path("/nonexistent"), CanaryPolicy())


def test_a_required_canary_makes_promotion_wait_for_the_online_gate(ledger: Ledger) -> None:
    text = json.dumps(
        {
            "version": 1,
            "required_gates": GATES,
            "approval": {"mode": "required", "approvers": approvers("alice", "bob")},
            "canary": {"required": True},
        }
    )
    pol = parse_policy(text.encode(), "governance.yml")
    _TEXTS[pol.sha256] = text
    refresh_run(ledger)
    first, second = retraining_run(ledger, "a"), retraining_run(ledger, "b")
    decide(ledger, pol, first, "approved", "alice", via="cli", signer=signer("alice"))
    assert promote(ledger, pol, first).version == 1  # no champion yet: no canary needed
    decide(ledger, pol, second, "approved", "bob", via="cli", signer=signer("bob"))
    with pytest.raises(PromotionRefused) as refused:
        promote(ledger, pol, second)
    assert refused.value.missing == ["gate online: no passing verdict for pair:m-b:i-b"]
    ledger.record_gate(second, "online", "fail", subject="pair:m-b:i-b")
    with pytest.raises(PromotionRefused, match="gate online: failed in this run"):
        promote(ledger, pol, second)
    ledger.record_gate(second, "online", "pass", subject="pair:m-b:i-b")
    assert promote(ledger, pol, second).model.sha256 == "m-b"
    # An index rebuilt with the champion's own model (catalog_refresh) needs no canary.
    third = retraining_run(ledger, "c")
    ledger.record_artifact("index", "/indexes/c2", "i-c2", meta={"model_sha256": "m-b"})
    ledger.update_lineage(third, model_sha256="m-b", index_sha256="i-c2")
    ledger.record_gate(third, "index", "pass", subject="index:i-c2")
    ledger.record_gate(third, "evaluation", "pass", subject="model:m-b")
    decide(ledger, pol, third, "approved", "alice", via="cli", signer=signer("alice"))
    assert promote(ledger, pol, third).index.sha256 == "i-c2"
