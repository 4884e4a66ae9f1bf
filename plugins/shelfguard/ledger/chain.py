"""The hash chain over the decision record: canonical payloads and entry hashes.

Every gate verdict, approval and alias move gets one entry in the append-only
``chain`` table. An entry holds the sha256 of a canonical JSON of the row's
meaningful columns (``payload_sha256``), the hash of the entry before it
(``prev_hash``) and its own hash::

    row_hash = sha256(prev_hash | kind | ref_id | payload_sha256)

This module is pure (no database access) and is shared by the store and by
migration 0003, which chains the rows existing ledgers already hold. The format
is part of the stored data: changing any function here makes every existing
chain fail verification, so a change needs a new chain version, not an edit.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: ``prev_hash`` of the first entry.
GENESIS = "0" * 64
#: What an entry can record; the table a kind's ``ref_id`` points into.
CHAIN_TABLES = {
    "gate": "gate_results",
    "approval": "approvals",
    "alias_move": "alias_history",
    "policy_approval": "policy_approvals",
}
CHAIN_KINDS = tuple(CHAIN_TABLES)


def _timestamp(value: Any) -> str | None:
    # SQLite hands back naive datetimes (always written in UTC); PostgreSQL
    # returns them in the session's time zone. The payload always uses UTC.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {value!r}")
    stamp = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return stamp.isoformat()


def canonical_json(payload: Mapping[str, Any]) -> bytes:
    """The one byte string a payload hashes as: sorted keys, no spaces, UTF-8, no NaN."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def payload_sha256(payload: Mapping[str, Any]) -> str:
    """The sha256 of a payload's canonical JSON."""
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def gate_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """The chained columns of a ``gate_results`` row (not ``created_at``: a retry moves it)."""
    return {
        "run_id": row["run_id"],
        "gate": row["gate"],
        "subject": row["subject"],
        "status": row["status"],
        "checks": row["checks"],
        "metrics": row["metrics"],
        "report_uri": row["report_uri"],
    }


def approval_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """The chained columns of an ``approvals`` row."""
    return {
        "run_id": row["run_id"],
        "model_sha256": row["model_sha256"],
        "index_sha256": row["index_sha256"],
        "decision": row["decision"],
        "decided_by": row["decided_by"],
        "decided_at": _timestamp(row["decided_at"]),
        "comment": row["comment"],
        "via": row["via"],
        "policy_sha256": row["policy_sha256"],
        **_signed(row),
    }


def _signed(row: Mapping[str, Any]) -> dict[str, Any]:
    """A signed row's envelope joins its payload; unsigned rows hash as they always did."""
    envelope = row.get("attestation")
    return {} if envelope is None else {"attestation": envelope}


def alias_move_payload(
    row: Mapping[str, Any], model_sha256: str | None, index_sha256: str | None
) -> dict[str, Any]:
    """The chained columns of an ``alias_history`` row, with the content hashes of its pair.

    The artifacts' sha256s are part of the payload, so re-pointing an artifact id
    at other content (an edited ``artifacts`` row) breaks the move that used it.
    """
    return {
        "alias": row["alias"],
        "version": row["version"],
        "action": row["action"],
        "model_artifact_id": row["model_artifact_id"],
        "index_artifact_id": row["index_artifact_id"],
        "model_sha256": model_sha256,
        "index_sha256": index_sha256,
        "previous_model_artifact_id": row["previous_model_artifact_id"],
        "previous_index_artifact_id": row["previous_index_artifact_id"],
        "run_id": row["run_id"],
        "moved_by": row["moved_by"],
        "moved_at": _timestamp(row["moved_at"]),
        "reason": row["reason"],
        **_signed(row),
    }


def policy_approval_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    """The chained columns of a ``policy_approvals`` row (its signature included)."""
    return {
        "policy_sha256": row["policy_sha256"],
        "approved_by": row["approved_by"],
        "approved_at": _timestamp(row["approved_at"]),
        "via": row["via"],
        "previous_sha256": row["previous_sha256"],
        "comment": row["comment"],
        "attestation": row["attestation"],
    }


def entry_hash(prev_hash: str, kind: str, ref_id: int, payload_hash: str) -> str:
    """``row_hash`` of a chain entry: it commits to its predecessor and to its row."""
    material = f"{prev_hash}|{kind}|{ref_id}|{payload_hash}"
    return hashlib.sha256(material.encode("utf-8")).hexdigest()
