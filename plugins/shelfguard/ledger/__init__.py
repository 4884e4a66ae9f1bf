"""Governance ledger: the evidence promotion decides from (see docs/ledger.md).

Import from here; ``models`` is an implementation detail of the store.
"""

from shelfguard.ledger.store import (
    ALIAS_ACTIONS,
    APPROVAL_CHANNELS,
    BATCH_STATES,
    DECISIONS,
    FINAL_OUTCOMES,
    GATE_STATUSES,
    MIGRATIONS_DIR,
    OUTCOMES,
    AliasMove,
    AliasRecord,
    ApprovalRecord,
    ArtifactRecord,
    BatchEventRecord,
    BatchRecord,
    GateRecord,
    IngestFileRecord,
    Ledger,
    LedgerError,
    RunRecord,
    SnapshotRecord,
    alembic_config,
    open_ledger,
)

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
    "GateRecord",
    "IngestFileRecord",
    "Ledger",
    "LedgerError",
    "RunRecord",
    "SnapshotRecord",
    "alembic_config",
    "open_ledger",
]
