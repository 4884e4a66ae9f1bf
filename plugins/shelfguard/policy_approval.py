"""Which policy is in force: a policy change is a recorded, signed decision.

A run pins the policy file it starts with, and refuses to start unless that exact
file (its sha256) is the policy in force: the newest one put in force with
``shelfguard policy approve FILE --by NAME``. Who may approve a policy:

- an approver with a key in the policy in force, when that policy lists any keys
  (so the people a policy trusts decide what replaces it);
- otherwise (the first policy with keys, or one replacing a development policy)
  an approver with a key in the new policy itself: whoever sets a ledger up names
  its first governance owners.

A *development* policy (``approval.mode`` and ``index_refresh`` both ``auto``, no
keys: nobody decides, the embedded demo's ``governance.yml``) is put in force by
the embedded set-up itself when the policy in force is none or another development
policy, signed with the home's own set-up key. Once a policy in force lists
approvers with keys, only a signed approval changes it, and a development policy
can never again replace it without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shelfguard import signing
from shelfguard.ledger import Ledger, LedgerError, PolicyApprovalRecord
from shelfguard.policy import Policy, PolicyError, load_policy_with_bytes, parse_policy

#: Who the embedded set-up signs as, when it puts a development policy in force.
SETUP_ACTOR = "shelfguard-setup"


class PolicyApprovalError(ValueError):
    """The policy is not in force, or the approval of a policy is refused."""


@dataclass(frozen=True)
class InForce:
    """The policy in force and the record that put it there."""

    policy: Policy
    record: PolicyApprovalRecord


def in_force(ledger: Ledger) -> InForce | None:
    """The policy in force, parsed from the bytes the ledger keeps (None: none yet)."""
    record = ledger.policy_in_force()
    if record is None:
        return None
    found = ledger.policy_content(record.policy_sha256)
    if found is None:  # the foreign key makes this impossible short of tampering
        raise PolicyApprovalError(f"policy {record.policy_sha256[:12]} in force is not stored")
    content, source = found
    try:
        return InForce(parse_policy(content.encode("utf-8"), source), record)
    except PolicyError as exc:
        raise PolicyApprovalError(f"the policy in force no longer validates: {exc}") from exc


def authority(current: InForce | None, new: Policy) -> Policy:
    """The policy whose approvers (with keys) may put ``new`` in force."""
    if current is not None and current.policy.approval.keys:
        return current.policy
    return new


def signer_problem(policy: Policy, signer: signing.Signer, what: str) -> str | None:
    """Why ``signer`` may not sign ``what`` under ``policy`` (None: they may)."""
    name = signer.name
    approvers = policy.approval.approvers
    if name not in approvers:
        return (
            f"{name} is not an approver in policy {policy.sha256[:12]} "
            f"({policy.path or 'the ledger'}; approvers: {', '.join(approvers) or 'none'}), "
            f"so may not {what}"
        )
    key = policy.approval.key_of(name)
    if key is None:
        return (
            f"policy {policy.sha256[:12]} lists no public key for {name}: a governance owner "
            f"adds it (`shelfguard keys show {name}` prints it) before {name} can {what} "
            "on the command line"
        )
    if key != signer.public_key:
        return (
            f"{name}'s key in {signing.keys_dir()} is not the one policy "
            f"{policy.sha256[:12]} lists for {name}: sign with the listed key"
        )
    return None


def approve(
    ledger: Ledger,
    path: Path | None,
    signer: signing.Signer,
    *,
    comment: str = "",
) -> PolicyApprovalRecord:
    """Put the policy file at ``path`` in force, signed by ``signer``; refuse when they may not.

    Approving the policy already in force again returns its record unchanged.
    """
    new, data = load_policy_with_bytes(path)
    current = in_force(ledger)
    if current is not None and current.policy.sha256 == new.sha256:
        return current.record
    judge = authority(current, new)
    problem = signer_problem(judge, signer, "approve a policy")
    if problem:
        raise PolicyApprovalError(problem)
    ledger.pin_policy(new.sha256, data.decode("utf-8"), new.path)
    return _record(ledger, signer, new, judge, current, via="signed", comment=comment)


def _record(
    ledger: Ledger,
    signer: signing.Signer,
    new: Policy,
    judge: Policy,
    current: InForce | None,
    *,
    via: str,
    comment: str,
) -> PolicyApprovalRecord:
    """Sign "``judge``'s approver puts ``new`` in force in place of ``current``" and record it."""
    at = signing.signing_time()
    previous = None if current is None else current.policy.sha256
    envelope = signer.sign(
        signing.policy_statement(
            signer.name,
            at,
            policy_sha256=judge.sha256,
            approves_sha256=new.sha256,
            previous_sha256=previous,
        )
    )
    try:
        return ledger.record_policy_approval(
            new.sha256,
            signer.name,
            approved_at=at,
            via=via,
            previous_sha256=previous,
            attestation=envelope,
            comment=comment,
        )
    except LedgerError as exc:
        raise PolicyApprovalError(str(exc)) from exc


def setup_signer(home: Path) -> signing.Signer:
    """The embedded set-up's own key (``<home>/keys/shelfguard-setup.key``), made on first use."""
    folder = home / "keys"
    if not (folder / f"{SETUP_ACTOR}.key").exists():
        signing.new_key(SETUP_ACTOR, folder)
    return signing.load_signer(SETUP_ACTOR, folder)


def require_in_force(ledger: Ledger, policy: Policy, data: bytes, home: Path) -> None:
    """Refuse (:class:`PolicyApprovalError`) to run on a policy that is not the one in force.

    A development policy replacing nothing or another development policy is put in
    force here by the embedded set-up (signed with its key under ``home``).
    """
    current = in_force(ledger)
    if current is not None and current.policy.sha256 == policy.sha256:
        return
    if policy.approval.development and (current is None or current.policy.approval.development):
        ledger.pin_policy(policy.sha256, data.decode("utf-8"), policy.path)
        try:
            _record(
                ledger,
                setup_signer(home),
                policy,
                policy,
                current,
                via="setup",
                comment="development policy (nobody decides) put in force by the embedded setup",
            )
        except PolicyApprovalError:
            # Another run of the same home put a policy in force first: fine if it is this one.
            raced = in_force(ledger)
            if raced is None or raced.policy.sha256 != policy.sha256:
                raise
        return
    where = policy.path or "the policy file"
    if current is None:
        why = "no policy is in force yet"
    else:
        why = (
            f"the policy in force is {current.policy.sha256[:12]} "
            f"(approved by {current.record.approved_by})"
        )
    raise PolicyApprovalError(
        f"policy {policy.sha256[:12]} ({where}) is not in force: {why}. An approver puts it "
        f"in force with `shelfguard policy approve {where} --by NAME`"
    )
