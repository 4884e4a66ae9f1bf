"""Tamper evidence: checking the decision record against its hash chain and its signatures.

:class:`VerifyMixin` recomputes the chain that :mod:`shelfguard.ledger.chain` defines
and the base class appends to; :class:`_SignatureCheck` checks every signed decision
against the keys of the policy it was made under.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shelfguard import signing
from shelfguard.ledger.base import LedgerBase, _columns
from shelfguard.ledger.chain import (
    CHAIN_TABLES,
    GENESIS,
    alias_move_payload,
    approval_payload,
    entry_hash,
    gate_payload,
    payload_sha256,
    policy_approval_payload,
)
from shelfguard.ledger.models import (
    Alias,
    AliasHistory,
    Approval,
    Artifact,
    BatchEvent,
    ChainEntry,
    GateResult,
    PolicyApproval,
    PolicyVersion,
)
from shelfguard.ledger.records import ChainProblem, LedgerTampered, VerifyReport


class VerifyMixin(LedgerBase):
    """Verification of the whole decision record (``shelfguard verify``)."""

    def verify(self) -> VerifyReport:
        """Recompute the hash chain and check the decision record against it.

        Checks, in this order: every chain entry links to the one before it and
        its ``row_hash`` matches its content; every gate verdict, approval and
        alias move has a chain entry (a row inserted outside the ledger has none)
        and its current content hashes to its latest entry; every chained row
        still exists; and each alias points where its latest recorded move put it.
        Reads one consistent snapshot; changes nothing.
        """
        problems: list[ChainProblem] = []
        with self._reading() as session:
            if self._dialect == "postgresql":
                # One snapshot for every query, so a concurrent write is not mistaken
                # for a row without its chain entry.
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            entries = list(session.scalars(sa.select(ChainEntry).order_by(ChainEntry.id)))
            latest = self._check_links(entries, problems)
            shas: dict[int, str] = {
                artifact_id: sha
                for artifact_id, sha in session.execute(sa.select(Artifact.id, Artifact.sha256))
            }
            seen: set[tuple[str, int]] = set()

            def check(kind: str, row_id: int, payload: Mapping[str, Any]) -> None:
                seen.add((kind, row_id))
                table = CHAIN_TABLES[kind]
                entry = latest.get((kind, row_id))
                if entry is None:
                    problems.append(
                        ChainProblem(
                            table, str(row_id), "has no chain entry: written outside the ledger"
                        )
                    )
                elif entry.payload_sha256 != payload_sha256(payload):
                    problems.append(
                        ChainProblem(
                            table,
                            str(row_id),
                            f"differs from what chain entry {entry.id} recorded: "
                            "edited outside the ledger",
                        )
                    )

            for gate in session.scalars(sa.select(GateResult).order_by(GateResult.id)):
                check("gate", gate.id, gate_payload(_columns(gate)))
            for approval in session.scalars(sa.select(Approval).order_by(Approval.id)):
                check("approval", approval.id, approval_payload(_columns(approval)))
            for move in session.scalars(sa.select(AliasHistory).order_by(AliasHistory.id)):
                payload = alias_move_payload(
                    _columns(move),
                    shas.get(move.model_artifact_id),
                    shas.get(move.index_artifact_id),
                )
                check("alias_move", move.id, payload)
            for approved in session.scalars(sa.select(PolicyApproval).order_by(PolicyApproval.id)):
                check("policy_approval", approved.id, policy_approval_payload(_columns(approved)))
            for (kind, ref_id), entry in sorted(latest.items(), key=lambda item: item[1].id):
                if (kind, ref_id) not in seen:
                    problems.append(
                        ChainProblem(
                            CHAIN_TABLES[kind],
                            str(ref_id),
                            f"is missing but chain entry {entry.id} recorded it: deleted",
                        )
                    )
            problems.extend(self._check_aliases(session))
            problems.extend(_SignatureCheck(session, shas).problems())
        return VerifyReport(
            entries=len(entries), head=entries[-1].row_hash if entries else None, problems=problems
        )

    @staticmethod
    def _check_links(
        entries: Sequence[ChainEntry], problems: list[ChainProblem]
    ) -> dict[tuple[str, int], ChainEntry]:
        """Check each entry's linkage and hash; return the latest entry of each chained row."""
        latest: dict[tuple[str, int], ChainEntry] = {}
        prev = GENESIS
        for entry in entries:
            if entry.kind not in CHAIN_TABLES:
                problems.append(
                    ChainProblem("chain", str(entry.id), f"unknown kind {entry.kind!r}")
                )
            elif entry.prev_hash != prev:
                problems.append(
                    ChainProblem(
                        "chain",
                        str(entry.id),
                        "does not follow the entry before it: an entry was deleted, "
                        "inserted or edited",
                    )
                )
            elif entry.row_hash != entry_hash(
                entry.prev_hash, entry.kind, entry.ref_id, entry.payload_sha256
            ):
                problems.append(
                    ChainProblem("chain", str(entry.id), "its row_hash does not match its content")
                )
            prev = entry.row_hash
            latest[(entry.kind, entry.ref_id)] = entry
        return latest

    @staticmethod
    def _check_aliases(session: Session) -> list[ChainProblem]:
        """Each alias must point where its latest recorded move put it."""
        problems = []
        for alias in session.scalars(sa.select(Alias).order_by(Alias.name)):
            move = session.execute(
                sa.select(AliasHistory)
                .where(AliasHistory.alias == alias.name)
                .order_by(AliasHistory.version.desc(), AliasHistory.id.desc())
                .limit(1)
            ).scalar_one_or_none()
            if move is None:
                problems.append(
                    ChainProblem("aliases", alias.name, "has no recorded move in alias_history")
                )
                continue
            now = (alias.version, alias.model_artifact_id, alias.index_artifact_id)
            recorded = (move.version, move.model_artifact_id, move.index_artifact_id)
            if now != recorded:
                problems.append(
                    ChainProblem(
                        "aliases",
                        alias.name,
                        f"points at v{now[0]} model {now[1]} + index {now[2]}, but its latest "
                        f"recorded move (alias_history {move.id}) is v{recorded[0]} model "
                        f"{recorded[1]} + index {recorded[2]}",
                    )
                )
        return problems

    def require_intact(self) -> VerifyReport:
        """:meth:`verify`, raising :class:`LedgerTampered` (naming the first bad row) if it fails."""
        report = self.verify()
        if not report.ok:
            raise LedgerTampered(report)
        return report


class _SignatureCheck:
    """Every signed decision's envelope verifies, states what its row records, and was
    signed with the key the relevant policy lists for its author."""

    def __init__(self, session: Session, shas: Mapping[int, str]) -> None:
        self.session = session
        self.shas = shas
        self._keys: dict[str, dict[str, str] | None] = {}
        self._development: dict[str, bool] = {}

    def _policy(self, sha256: str | None) -> tuple[dict[str, str] | None, bool]:
        """(approver keys, is a development policy) of a pinned policy; (None, False) if absent."""
        if not sha256:
            return None, False
        if sha256 not in self._keys:
            from shelfguard.policy import PolicyError, parse_policy

            row = self.session.get(PolicyVersion, sha256)
            try:
                policy = None if row is None else parse_policy(row.content.encode(), row.source)
            except PolicyError:
                policy = None
            self._keys[sha256] = None if policy is None else dict(policy.approval.keys)
            self._development[sha256] = policy is not None and policy.approval.development
        return self._keys[sha256], self._development[sha256]

    def _check(
        self,
        table: str,
        row_id: object,
        envelope: Mapping[str, Any] | None,
        expected: Mapping[str, Any],
        *,
        any_key: bool = False,
    ) -> ChainProblem | None:
        keys, _ = self._policy(expected.get("policy_sha256"))
        key = (keys or {}).get(str(expected.get("by")))
        if any_key and envelope:
            key = str((envelope.get("signatures") or [{}])[0].get("keyid"))
        elif keys is None and envelope:
            sha = str(expected.get("policy_sha256") or "none")[:12]
            return ChainProblem(
                table, str(row_id), f"signed under policy {sha}, which the ledger does not hold"
            )
        problem = signing.check_envelope(envelope, expected, key)
        return None if problem is None else ChainProblem(table, str(row_id), problem)

    def _claimed_policy(self, envelope: Mapping[str, Any] | None) -> str | None:
        try:
            return str(signing.open_envelope(envelope).statement.get("policy_sha256") or "")
        except signing.SigningError:
            return None

    def problems(self) -> list[ChainProblem]:
        """Every signed row that does not verify (unsigned rows are judged elsewhere)."""
        found: list[ChainProblem | None] = []
        for a in self.session.scalars(
            sa.select(Approval).where(Approval.attestation.is_not(None)).order_by(Approval.id)
        ):
            expected = signing.approval_statement(a)
            found.append(self._check("approvals", a.id, a.attestation, expected))
        for m in self.session.scalars(
            sa.select(AliasHistory)
            .where(AliasHistory.attestation.is_not(None))
            .order_by(AliasHistory.id)
        ):
            expected = signing.rollback_statement(
                m.moved_by,
                m.moved_at,
                alias=m.alias,
                version=m.version,
                model_sha256=self.shas.get(m.model_artifact_id, ""),
                index_sha256=self.shas.get(m.index_artifact_id, ""),
                policy_sha256=self._claimed_policy(m.attestation) or "",
            )
            found.append(self._check("alias_history", m.id, m.attestation, expected))
        for e in self.session.scalars(
            sa.select(BatchEvent).where(BatchEvent.attestation.is_not(None)).order_by(BatchEvent.id)
        ):
            expected = signing.purge_statement(
                e.actor or "",
                e.at,
                batch_id=e.batch_id,
                policy_sha256=self._claimed_policy(e.attestation) or "",
            )
            found.append(self._check("batch_events", e.id, e.attestation, expected))
        for p in self.session.scalars(sa.select(PolicyApproval).order_by(PolicyApproval.id)):
            found.append(self._policy_problem(p))
        return [problem for problem in found if problem is not None]

    def _policy_problem(self, row: PolicyApproval) -> ChainProblem | None:
        authority = self._claimed_policy(row.attestation) or ""
        expected = signing.policy_statement(
            row.approved_by,
            row.approved_at,
            policy_sha256=authority,
            approves_sha256=row.policy_sha256,
            previous_sha256=row.previous_sha256,
        )
        if row.via == "setup":
            _, development = self._policy(row.policy_sha256)
            if not development:
                return ChainProblem(
                    "policy_approvals",
                    str(row.id),
                    "approved by the embedded setup, but it is not a development policy",
                )
            return self._check("policy_approvals", row.id, row.attestation, expected, any_key=True)
        return self._check("policy_approvals", row.id, row.attestation, expected)
