"""Named crash points at every boundary where two stores are written (for fault tests).

shelfguard writes three stores that cannot share one transaction: the warehouse
(DuckDB or PostgreSQL), the ledger, and the artifact store. Between two of those
writes a process can die (the out-of-memory killer, a lost machine, SIGKILL), and
the next run must find a home it can continue from: no row lost or doubled, ledger
and warehouse in agreement, the champion either the old pair or the new one.

Each boundary calls :func:`failpoint` with its name. With the environment variable
``SHELFGUARD_FAILPOINTS`` naming it (a comma-separated list), the process kills itself
there with SIGKILL: no ``finally`` block, no ``atexit`` handler, no rollback runs,
exactly as when the kernel kills it. Unset (always, outside the fault tests), a
failpoint costs one dictionary lookup. ``tests/faults`` runs every point once and
``docs/faults.md`` lists them with what a rerun finds.
"""

from __future__ import annotations

import os
import signal

#: The environment variable that arms failpoints (comma-separated names).
FAILPOINTS_ENV = "SHELFGUARD_FAILPOINTS"

#: Every failpoint, with what has been written (and what not) when it fires.
POINTS: dict[str, str] = {
    "ingest.warehouse_committed": "raw and quarantine rows committed; the ledger knows no file",
    "ingest.file_recorded": "the ledger recorded the batch's first file, not the others",
    "retention.warehouse_committed": (
        "expired quarantined lines deleted; the ledger has no record of the purge"
    ),
    "land.warehouse_committed": "the batch's files registered in the warehouse; not landed in the ledger",
    "publish.warehouse_committed": (
        "the marts point at the new snapshot; the ledger knows no snapshot, the batch is not published"
    ),
    "publish.snapshot_recorded": "the ledger recorded the snapshot; the batch is not yet published",
    "artifact.copying": "a model or index is half copied to the object store",
    "model.stored": "the model is stored by content; the ledger has no artifact row",
    "index.stored": "the index is stored by content; the ledger has no artifact row",
    "approval.signed": "the decision is signed; the ledger has not recorded it",
    "approval.recorded": "the ledger recorded the decision; the command has not reported it",
    "promote.alias_moved": "the champion moved; the run's lineage does not say so",
    "rollback.signed": "the rollback is signed; the alias has not moved",
    "rollback.alias_moved": "the champion moved back; the command has not reported it",
    "purge.warehouse_committed": "the batch's rows deleted; the ledger still says blocked",
    "purge.files_forgotten": "the ledger forgot the purged files' loads; the batch is not yet purged",
}


def failpoint(name: str) -> None:
    """Die here with SIGKILL when ``name`` is armed in ``SHELFGUARD_FAILPOINTS``."""
    if name not in POINTS:
        raise KeyError(f"unknown failpoint {name!r}")
    armed = os.environ.get(FAILPOINTS_ENV)
    if armed and name in {part.strip() for part in armed.split(",")}:
        os.kill(os.getpid(), signal.SIGKILL)
