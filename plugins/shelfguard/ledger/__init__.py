"""Governance ledger: the evidence promotion decides from (see docs/ledger.md).

Import from here; ``models`` and the modules the store is built from (``base``,
``runs``, ``ingestion``, ``approvals``, ``aliases``, ``verify``) are implementation details.
"""

from shelfguard.ledger.engine import MIGRATIONS_DIR, alembic_config
from shelfguard.ledger.records import (
    ALIAS_ACTIONS,
    APPROVAL_CHANNELS,
    BATCH_STATES,
    DECISIONS,
    FINAL_OUTCOMES,
    GATE_STATUSES,
    OUTCOMES,
    AliasMove,
    AliasRecord,
    ApprovalRecord,
    ArtifactRecord,
    BatchEventRecord,
    BatchRecord,
    ChainProblem,
    GateRecord,
    IngestFileRecord,
    LedgerError,
    LedgerTampered,
    PolicyApprovalRecord,
    RetentionPurgeRecord,
    RunRecord,
    SnapshotRecord,
    VerifyReport,
)
from shelfguard.ledger.store import Ledger, open_ledger

__all__ = [
    "ALIAS_ACTIONS",
    "APPROVAL_CHANNELS",
    "BATCH_STATES",
    "DECISIONS",
    "FINAL_OUTCOMES",
    "GATE_STATUSES",
    "MIGRATIONS_DIR",
    "OUTCOMES",
    "AliasMove",
    "AliasRecord",
    "ApprovalRecord",
    "ArtifactRecord",
    "BatchEventRecord",
    "BatchRecord",
    "ChainProblem",
    "GateRecord",
    "IngestFileRecord",
    "Ledger",
    "LedgerError",
    "LedgerTampered",
    "PolicyApprovalRecord",
    "RetentionPurgeRecord",
    "RunRecord",
    "SnapshotRecord",
    "VerifyReport",
    "alembic_config",
    "open_ledger",
]
