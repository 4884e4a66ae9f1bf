"""The ledger's aliases: where ``champion`` (or any alias) points, and every move it made.

An alias always points at a model and its index together, and every move is one
transaction with its history row (invariant 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from shelfguard.ledger.base import LedgerBase, _check_choice, _columns
from shelfguard.ledger.chain import alias_move_payload
from shelfguard.ledger.models import ALIAS_ACTIONS, Alias, AliasHistory, Artifact
from shelfguard.ledger.records import (
    AliasMove,
    AliasRecord,
    LedgerError,
    _alias_move,
    _artifact_record,
    _now,
    _utc,
)


class AliasesMixin(LedgerBase):
    """Reading, moving (promote or rollback) and listing the history of aliases."""

    def get_alias(self, name: str = "champion") -> AliasRecord | None:
        """Where the alias points now, or None if it was never moved."""
        with self._reading() as session:
            alias = session.get(Alias, name)
            return None if alias is None else self._alias_record(session, alias)

    def move_alias(
        self,
        name: str,
        model_artifact_id: int,
        index_artifact_id: int,
        *,
        moved_by: str,
        reason: str,
        action: str = "promote",
        run_id: str | None = None,
        expected_version: int | None = None,
        moved_at: datetime | None = None,
        attestation: Mapping[str, Any] | None = None,
    ) -> AliasRecord:
        """Point the alias at a model and its index, together, in one transaction.

        ``attestation`` is the author's signed statement of the move, made at
        ``moved_at`` (default: now), for a rollback made on the command line.

        The alias row and its history row are written together or not at all
        (invariant 3). ``expected_version`` is the version the caller decided
        from (0 for an alias that does not exist yet); if the alias has moved
        since, this raises :class:`LedgerError` and changes nothing. Moving to
        the pair the alias already points at is a no-op that returns the
        current alias, so a retried promotion never adds a version.
        """
        _check_choice("alias action", action, ALIAS_ACTIONS)
        if not moved_by or not reason:
            raise LedgerError("an alias move needs moved_by and a reason")
        try:
            with self._writing() as session:
                self._lock_chain(session)
                model = self._require_artifact(session, model_artifact_id, "model")
                index = self._require_artifact(session, index_artifact_id, "index")
                if run_id is not None:
                    self._require_run(session, run_id)
                alias = session.execute(
                    sa.select(Alias).where(Alias.name == name).with_for_update()
                ).scalar_one_or_none()
                already_there = (
                    alias is not None
                    and alias.model_artifact_id == model_artifact_id
                    and alias.index_artifact_id == index_artifact_id
                )
                if alias is not None and already_there:
                    return self._alias_record(session, alias)
                current_version = 0 if alias is None else alias.version
                if expected_version is not None and expected_version != current_version:
                    raise LedgerError(
                        f"alias {name!r} is at version {current_version}, not "
                        f"{expected_version}: it moved since you read it"
                    )
                previous_model = None if alias is None else alias.model_artifact_id
                previous_index = None if alias is None else alias.index_artifact_id
                now = _utc(moved_at) if moved_at is not None else _now()
                if alias is None:
                    alias = Alias(name=name)
                    session.add(alias)
                alias.model_artifact_id = model_artifact_id
                alias.index_artifact_id = index_artifact_id
                alias.run_id = run_id
                alias.updated_at = now
                alias.updated_by = moved_by
                # Flushed first so the version bump (or the insert) happens
                # before the history row that records it.
                session.flush()
                move = AliasHistory(
                    alias=name,
                    version=alias.version,
                    action=action,
                    model_artifact_id=model_artifact_id,
                    index_artifact_id=index_artifact_id,
                    previous_model_artifact_id=previous_model,
                    previous_index_artifact_id=previous_index,
                    run_id=run_id,
                    moved_by=moved_by,
                    moved_at=now,
                    reason=reason,
                    attestation=None if attestation is None else dict(attestation),
                )
                session.add(move)
                session.flush()
                payload = alias_move_payload(_columns(move), model.sha256, index.sha256)
                self._chain(session, "alias_move", move.id, payload)
                return self._alias_record(session, alias)
        except (IntegrityError, StaleDataError) as exc:
            # Another process moved or created the alias between our read and
            # our write; the transaction rolled back, so nothing of this move was kept.
            raise LedgerError(
                f"alias {name!r} was not moved (it changed concurrently): {exc}"
            ) from exc

    def alias_history(self, name: str = "champion") -> list[AliasMove]:
        """Every move of the alias, oldest first."""
        query = (
            sa.select(AliasHistory)
            .where(AliasHistory.alias == name)
            .order_by(AliasHistory.version, AliasHistory.id)
        )
        return self._all(query, _alias_move)

    def _require_artifact(self, session: Session, artifact_id: int, kind: str) -> Artifact:
        row = session.get(Artifact, artifact_id)
        if row is None:
            raise LedgerError(f"artifact {artifact_id} does not exist")
        if row.kind != kind:
            raise LedgerError(f"artifact {artifact_id} is a {row.kind!r}, not a {kind!r}")
        return row

    def _alias_record(self, session: Session, alias: Alias) -> AliasRecord:
        model = session.get(Artifact, alias.model_artifact_id)
        index = session.get(Artifact, alias.index_artifact_id)
        if model is None or index is None:
            raise LedgerError(f"alias {alias.name!r} points at a missing artifact")
        return AliasRecord(
            name=alias.name,
            version=alias.version,
            model=_artifact_record(model),
            index=_artifact_record(index),
            run_id=alias.run_id,
            updated_at=_utc(alias.updated_at),
            updated_by=alias.updated_by,
        )
