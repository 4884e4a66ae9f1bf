"""The ledger's human decisions: approvals of a model + index pair, and the policy in force."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from shelfguard.ledger.base import LedgerBase, _check_choice, _columns
from shelfguard.ledger.chain import approval_payload, policy_approval_payload
from shelfguard.ledger.models import (
    APPROVAL_CHANNELS,
    DECISIONS,
    POLICY_APPROVAL_CHANNELS,
    Approval,
    PolicyApproval,
    PolicyVersion,
)
from shelfguard.ledger.records import (
    ApprovalRecord,
    LedgerError,
    PolicyApprovalRecord,
    _approval_record,
    _now,
    _policy_approval_record,
    _utc,
)


class ApprovalsMixin(LedgerBase):
    """Promotion approvals, pinned policies and the approvals that put a policy in force."""

    # approvals

    def record_approval(
        self,
        run_id: str,
        decision: str,
        decided_by: str,
        *,
        model_sha256: str,
        index_sha256: str,
        via: str,
        comment: str = "",
        policy_sha256: str | None = None,
        decided_at: datetime | None = None,
        attestation: Mapping[str, Any] | None = None,
    ) -> ApprovalRecord:
        """Record a decision on promoting this exact model + index pair.

        ``attestation`` is the author's signed statement of the decision, made at
        ``decided_at`` (default: now), for decisions made on the command line.

        Approvals are an append-only log so a changed mind stays visible; a
        retry that repeats the approver's latest decision on the same pair
        (same decision, same channel) returns that row instead of adding one.
        """
        _check_choice("decision", decision, DECISIONS)
        _check_choice("approval channel", via, APPROVAL_CHANNELS)
        if not decided_by:
            raise LedgerError("an approval needs decided_by")
        if not model_sha256 or not index_sha256:
            raise LedgerError("an approval needs both model_sha256 and index_sha256")
        with self._writing() as session:
            self._lock_chain(session)
            # Locking the run serialises approvals of that run, so two retries
            # racing each other cannot both decide that no row exists yet.
            self._require_run(session, run_id, lock=True)
            latest = session.execute(
                sa.select(Approval)
                .where(
                    Approval.run_id == run_id,
                    Approval.model_sha256 == model_sha256,
                    Approval.index_sha256 == index_sha256,
                    Approval.decided_by == decided_by,
                )
                .order_by(Approval.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if latest is not None and (latest.decision, latest.via) == (decision, via):
                return _approval_record(latest)
            row = Approval(
                run_id=run_id,
                model_sha256=model_sha256,
                index_sha256=index_sha256,
                decision=decision,
                decided_by=decided_by,
                decided_at=_utc(decided_at) if decided_at is not None else _now(),
                comment=comment,
                via=via,
                policy_sha256=policy_sha256,
                attestation=None if attestation is None else dict(attestation),
            )
            session.add(row)
            session.flush()
            self._chain(session, "approval", row.id, approval_payload(_columns(row)))
            return _approval_record(row)

    def approvals(self, run_id: str) -> list[ApprovalRecord]:
        """Every decision recorded for the run, oldest first."""
        query = sa.select(Approval).where(Approval.run_id == run_id).order_by(Approval.id)
        return self._all(query, _approval_record)

    def approvals_of_pair(self, model_sha256: str, index_sha256: str) -> list[ApprovalRecord]:
        """Every decision on this exact model + index pair, in any run, oldest first."""
        query = (
            sa.select(Approval)
            .where(Approval.model_sha256 == model_sha256, Approval.index_sha256 == index_sha256)
            .order_by(Approval.id)
        )
        return self._all(query, _approval_record)

    # pinned policies and published snapshots

    def pin_policy(self, sha256: str, content: str, source: str) -> None:
        """Keep the bytes of a policy under their sha256 (idempotent)."""
        with self._writing() as session:
            insert = self._insert(
                PolicyVersion,
                {"sha256": sha256, "content": content, "source": source, "first_seen_at": _now()},
            )
            session.execute(insert.on_conflict_do_nothing(index_elements=["sha256"]))

    def policy_content(self, sha256: str) -> tuple[str, str] | None:
        """(content, source) of a pinned policy, or None if no run pinned it."""
        with self._reading() as session:
            row = session.get(PolicyVersion, sha256)
            return None if row is None else (row.content, row.source)

    def record_policy_approval(
        self,
        policy_sha256: str,
        approved_by: str,
        *,
        approved_at: datetime,
        via: str,
        previous_sha256: str | None,
        attestation: Mapping[str, Any],
        comment: str = "",
    ) -> PolicyApprovalRecord:
        """Put a pinned policy in force, recording who approved it and their signed statement.

        The policy must have been pinned (:meth:`pin_policy`) first; ``previous_sha256``
        must be the policy in force now (None when there is none), so two approvals
        decided from the same state cannot both land.
        """
        _check_choice("policy approval channel", via, POLICY_APPROVAL_CHANNELS)
        if not approved_by:
            raise LedgerError("a policy approval needs approved_by")
        with self._writing() as session:
            self._lock_chain(session)
            if session.get(PolicyVersion, policy_sha256) is None:
                raise LedgerError(f"policy {policy_sha256[:12]} is not pinned in the ledger")
            current = session.execute(
                sa.select(PolicyApproval.policy_sha256)
                .order_by(PolicyApproval.id.desc())
                .limit(1)
                .with_for_update()
            ).scalar_one_or_none()
            if current != previous_sha256:
                raise LedgerError(
                    f"the policy in force is {(current or 'none')[:12]}, not "
                    f"{(previous_sha256 or 'none')[:12]}: it changed since you read it"
                )
            row = PolicyApproval(
                policy_sha256=policy_sha256,
                approved_by=approved_by,
                approved_at=_utc(approved_at),
                via=via,
                previous_sha256=previous_sha256,
                comment=comment,
                attestation=dict(attestation),
            )
            session.add(row)
            session.flush()
            self._chain(session, "policy_approval", row.id, policy_approval_payload(_columns(row)))
            return _policy_approval_record(row)

    def policy_approvals(self, sha256: str | None = None) -> list[PolicyApprovalRecord]:
        """Every policy approval (of one policy, with ``sha256``), oldest first."""
        query = sa.select(PolicyApproval).order_by(PolicyApproval.id)
        if sha256 is not None:
            query = query.where(PolicyApproval.policy_sha256 == sha256)
        return self._all(query, _policy_approval_record)

    def policy_in_force(self) -> PolicyApprovalRecord | None:
        """The newest policy approval: its policy is the one in force (None: none yet)."""
        query = sa.select(PolicyApproval).order_by(PolicyApproval.id.desc()).limit(1)
        with self._reading() as session:
            row = session.scalars(query).one_or_none()
            return None if row is None else _policy_approval_record(row)
