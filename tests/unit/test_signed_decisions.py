"""Decisions on the command line carry a verified author: personal keys, signed statements,
and a policy that is in force only once an approver signed it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from signing_support import approvers, approvers_yaml, signer, write_keys

from shelfguard import signing
from shelfguard.cli import main
from shelfguard.config import Settings, project_root
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.model.approval import ApprovalError, record_decision
from shelfguard.model.promotion import PromotionRefused, check_promotion, promote, rollback
from shelfguard.policy import PolicyError, parse_policy
from shelfguard.policy_approval import PolicyApprovalError, approve, in_force, require_in_force
from shelfguard.run_context import pin_policy

GATES = ["ingest", "raw_data", "training_data", "evaluation", "index"]


def _policy_file(folder: Path, name: str, *people: str, **approval: Any) -> Path:
    base = yaml.safe_load((project_root() / "governance.yml").read_text())
    base["approval"] = {"mode": "required", "approvers": approvers(*people), **approval}
    path = folder / name
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


@pytest.fixture
def ledger(sg_home: Settings) -> Ledger:
    return open_ledger(sg_home.ledger_url)


def _candidate(ledger: Ledger, policy_path: Path, home: Path) -> tuple[str, Any]:
    """A retraining run pinned to the policy at ``policy_path``, gated and waiting."""
    before = os.environ.get("SHELFGUARD_POLICY")
    os.environ["SHELFGUARD_POLICY"] = str(policy_path)
    try:
        policy = pin_policy(ledger, home)
    finally:
        if before is None:
            del os.environ["SHELFGUARD_POLICY"]
        else:
            os.environ["SHELFGUARD_POLICY"] = before
    ledger.start_run("catalog_refresh/1", "catalog_refresh", triggered_by="cron")
    for gate, subject in (("ingest", "b:1"), ("raw_data", "b:1"), ("training_data", "data:s")):
        ledger.record_gate("catalog_refresh/1", gate, "pass", subject=subject)
    run_id = "search_model_retraining/1"
    ledger.start_run(
        run_id,
        "search_model_retraining",
        triggered_by="carol",
        lineage={"policy_sha256": policy.sha256},
    )
    ledger.record_artifact("model", "/m", "m1", produced_by_run=run_id)
    ledger.record_artifact("index", "/i", "i1", produced_by_run=run_id, meta={"model_sha256": "m1"})
    ledger.update_lineage(run_id, data_snapshot_id="s", model_sha256="m1", index_sha256="i1")
    ledger.record_gate(run_id, "training_data", "pass", subject="data:s")
    ledger.record_gate(run_id, "evaluation", "pass", subject="model:m1")
    ledger.record_gate(run_id, "index", "pass", subject="index:i1")
    return run_id, policy


def test_a_new_key_is_private_and_its_public_half_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHELFGUARD_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("SHELFGUARD_HOME", str(tmp_path / "home"))
    assert main(["keys", "new", "alice"]) == 0
    public = capsys.readouterr().out.strip()
    assert signing.parse_public_key(public) is not None
    key = tmp_path / "keys" / "alice.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert "PRIVATE KEY" in key.read_text() and public not in key.read_text()
    assert main(["keys", "show", "alice"]) == 0
    assert capsys.readouterr().out.strip() == public
    assert main(["keys", "new", "alice"]) == 2  # never overwritten by accident
    assert signing.load_signer("alice").public_key == public
    key.chmod(0o644)
    with pytest.raises(signing.SigningError, match="can be read by other users"):
        signing.load_signer("alice")
    with pytest.raises(signing.SigningError, match="shelfguard keys new bob"):
        signing.load_signer("bob")


def test_the_policy_lists_keys_with_their_approvers() -> None:
    text = json.dumps(
        {"version": 1, "approval": {"mode": "required", "approvers": [*approvers("alice"), "bob"]}}
    )
    policy = parse_policy(text.encode(), "p.yml")
    assert policy.approval.approvers == ["alice", "bob"]
    assert policy.approval.key_of("alice") == signer("alice").public_key
    assert policy.approval.key_of("bob") is None
    for bad, says in (
        ([{"name": "alice", "key": "ed25519:short"}], "ed25519:"),
        ([{"name": "alice", "key": signer("alice").public_key, "role": "x"}], "unknown: role"),
        (["alice", "alice"], "more than once"),
    ):
        broken = json.dumps({"version": 1, "approval": {"mode": "required", "approvers": bad}})
        with pytest.raises(PolicyError, match=says):
            parse_policy(broken.encode(), "p.yml")
    explicit = json.dumps({"version": 1, "approval": {"approvers": ["a"], "keys": {"a": "x"}}})
    with pytest.raises(PolicyError, match="listed with their approver"):
        parse_policy(explicit.encode(), "p.yml")


def test_a_required_policy_runs_only_once_an_approver_signed_it(
    sg_home: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    path = _policy_file(tmp_path, "governance.yml", "owner", "alice")
    policy, data = parse_policy(path.read_bytes(), str(path)), path.read_bytes()
    with pytest.raises(PolicyApprovalError, match="shelfguard policy approve"):
        require_in_force(ledger, policy, data, sg_home.home)
    with pytest.raises(PolicyApprovalError, match="mallory is not an approver"):
        approve(ledger, path, signer("mallory"))
    record = approve(ledger, path, signer("owner"), comment="first production policy")
    require_in_force(ledger, policy, data, sg_home.home)
    assert (record.approved_by, record.via, record.previous_sha256) == ("owner", "signed", None)
    assert approve(ledger, path, signer("owner")).id == record.id  # already in force

    # What replaces it is decided by the approvers of the policy in force: a name listed
    # only in the new file (made for the purpose) is refused.
    loose = _policy_file(tmp_path, "loose.yml", "mallory", timeout_minutes=1)
    with pytest.raises(PolicyApprovalError, match="mallory is not an approver in policy"):
        approve(ledger, loose, signer("mallory"))
    # A development policy cannot slip in unsigned once a keyed policy is in force.
    dev = (project_root() / "governance.yml").read_bytes()
    with pytest.raises(PolicyApprovalError, match="is not in force"):
        require_in_force(ledger, parse_policy(dev, "governance.yml"), dev, sg_home.home)
    approve(ledger, loose, signer("alice"), comment="alice hands over")
    current = in_force(ledger)
    assert current is not None and current.policy.approval.approvers == ["mallory"]
    assert ledger.verify().ok


def test_the_embedded_setup_signs_only_a_development_policy(
    sg_home: Settings, ledger: Ledger
) -> None:
    data = (project_root() / "governance.yml").read_bytes()
    policy = parse_policy(data, "governance.yml")
    assert policy.approval.development
    require_in_force(ledger, policy, data, sg_home.home)
    current = in_force(ledger)
    assert current is not None and current.record.via == "setup"
    key = sg_home.home / "keys" / "shelfguard-setup.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert ledger.verify().ok
    # A setup approval edited to put a required policy in force is named by verify.
    required = json.dumps({"version": 1, "approval": {"mode": "required", "approvers": ["x"]}})
    sha = parse_policy(required.encode(), "r.yml").sha256
    ledger.pin_policy(sha, required, "r.yml")
    with ledger.engine.begin() as connection:
        connection.execute(sa.text("UPDATE policy_approvals SET policy_sha256 = :s"), {"s": sha})
    problems = [str(p) for p in ledger.verify().problems]
    assert any(
        p.startswith("policy_approvals row 1: differs from what chain entry") for p in problems
    )
    assert any("not a development policy" in p for p in problems)


def test_a_decision_is_signed_with_the_key_the_runs_policy_lists(
    sg_home: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    path = _policy_file(tmp_path, "governance.yml", "alice", "bob")
    approve(ledger, path, signer("alice"))
    run_id, policy = _candidate(ledger, path, sg_home.home)
    impostor = signing.Signer("alice", signer("mallory").private_key)
    with pytest.raises(ApprovalError, match=r"not the one policy .* lists for alice"):
        record_decision(ledger, policy, run_id, "approved", "alice", via="cli", signer=impostor)
    with pytest.raises(ApprovalError, match="signed with alice's key"):
        record_decision(ledger, policy, run_id, "approved", "alice", via="cli")
    record = record_decision(
        ledger, policy, run_id, "approved", "alice", via="cli", signer=signer("alice")
    )
    opened = signing.open_envelope(record.attestation)
    assert opened.keyid == signer("alice").public_key
    assert opened.statement["run_id"] == run_id
    assert opened.statement["policy_sha256"] == policy.sha256
    assert (opened.statement["model_sha256"], opened.statement["index_sha256"]) == ("m1", "i1")
    assert check_promotion(ledger, policy, run_id).approval.id == record.id


def test_a_forged_or_stripped_signature_is_caught(
    sg_home: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    path = _policy_file(tmp_path, "governance.yml", "alice", "bob")
    approve(ledger, path, signer("alice"))
    run_id, policy = _candidate(ledger, path, sg_home.home)
    record = record_decision(
        ledger, policy, run_id, "approved", "alice", via="cli", signer=signer("alice")
    )
    # mallory re-signs alice's statement with her own key and writes it into the row.
    forged = signer("mallory").sign(signing.open_envelope(record.attestation).statement)
    with ledger.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE approvals SET attestation = :a WHERE id = :i"),
            {"a": json.dumps(forged), "i": record.id},
        )
    problems = [str(p) for p in ledger.verify().problems]
    assert problems[0].startswith(f"approvals row {record.id}: differs from what chain entry")
    assert any("not the one the policy lists for alice" in p for p in problems)
    with pytest.raises(PromotionRefused, match=f"approvals row {record.id}"):
        promote(ledger, policy, run_id)
    with ledger.engine.begin() as connection:
        connection.execute(sa.text("UPDATE approvals SET attestation = NULL"))
    assert not ledger.verify().ok
    assert ledger.get_alias() is None


def test_rollback_and_purge_need_a_signing_approver_of_the_policy_in_force(
    sg_home: Settings, ledger: Ledger, tmp_path: Path
) -> None:
    from shelfguard.data.publication import PublicationError, purge

    path = _policy_file(tmp_path, "governance.yml", "alice", "bob")
    approve(ledger, path, signer("alice"))
    run_id, policy = _candidate(ledger, path, sg_home.home)
    record_decision(ledger, policy, run_id, "approved", "alice", via="cli", signer=signer("alice"))
    promote(ledger, policy, run_id)
    with pytest.raises(PromotionRefused, match="mallory is not an approver"):
        rollback(ledger, policy, signer=signer("mallory"))
    impostor = signing.Signer("bob", signer("mallory").private_key)
    with pytest.raises(PromotionRefused, match=r"not the one policy .* lists for bob"):
        rollback(ledger, policy, signer=impostor)
    with pytest.raises(PromotionRefused, match="no earlier version"):
        rollback(ledger, policy, signer=signer("bob"))
    with pytest.raises(PublicationError, match="mallory is not an approver"):
        purge(sg_home, ledger, "batch-x", signer=signer("mallory"), policy=policy, reason="r")


def test_the_cli_signs_with_the_key_named_by_by(
    sg_home: Settings, ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = write_keys(tmp_path / "keys", "alice", "bob", "mallory")
    monkeypatch.setenv("SHELFGUARD_KEYS_DIR", str(keys))
    path = _policy_file(tmp_path, "governance.yml", "alice", "bob")
    monkeypatch.setenv("SHELFGUARD_POLICY", str(path))
    assert main(["policy", "approve", str(path), "--by", "mallory"]) == 2
    assert main(["policy", "approve", str(path), "--by", "alice", "--comment", "go live"]) == 0
    assert main(["policy", "show", "--json"]) == 0
    run_id, _ = _candidate(ledger, path, sg_home.home)
    # mallory points the shell at a policy file of her own: the run's pinned policy decides.
    own = _policy_file(tmp_path, "own.yml", "mallory")
    monkeypatch.setenv("SHELFGUARD_POLICY", str(own))
    assert main(["approve", run_id, "--by", "mallory"]) == 2
    assert main(["reject", run_id, "--by", "mallory"]) == 2
    assert main(["approve", run_id, "--by", "bob"]) == 0
    assert ledger.approvals(run_id)[-1].attestation is not None
    assert main(["verify"]) == 0


def test_approvers_yaml_is_what_a_person_pastes(tmp_path: Path) -> None:
    text = "version: 1\napproval:\n  mode: required\n  approvers:\n" + approvers_yaml("alice")
    policy = parse_policy(text.encode(), "p.yml")
    assert policy.approval.key_of("alice") == signer("alice").public_key
