"""The governance ledger: runs, artifacts, gate verdicts, approvals and aliases.

Promotion reads its evidence from here rather than from Airflow task states
(invariant 2), so every write is idempotent on its natural key (invariant 7)
and every alias move is one transaction with its history row (invariant 3).

All methods return frozen records, never ORM objects: a caller cannot hold a
session open by accident, and nothing it does to a record reaches the database.
SQLite (embedded runtime, one file shared by Airflow task processes and the
CLI) and PostgreSQL (production) behave the same.

:class:`Ledger` is composed of one mixin per subject: runs, artifacts and gates
(``runs``), ingestion and batches (``ingestion``), approvals and policies
(``approvals``), aliases (``aliases``) and tamper evidence (``verify``), all on the
connection and helpers of ``base``.
"""

from __future__ import annotations

from shelfguard.ledger.aliases import AliasesMixin
from shelfguard.ledger.approvals import ApprovalsMixin
from shelfguard.ledger.ingestion import IngestionMixin
from shelfguard.ledger.records import AliasRecord
from shelfguard.ledger.runs import RunsMixin
from shelfguard.ledger.verify import VerifyMixin

__all__ = ["Ledger", "open_ledger"]


class Ledger(RunsMixin, IngestionMixin, ApprovalsMixin, AliasesMixin, VerifyMixin):
    """The governance ledger on one database (a SQLAlchemy URL: sqlite or postgresql)."""

    # Joins two subjects: the alias is read only once verification passed.
    def verify_champion(self, name: str = "champion") -> AliasRecord | None:
        """Where the alias points, only once the whole ledger verified (else LedgerTampered).

        Callers that act on the champion (search, promotion, rollback, status)
        use this instead of :meth:`get_alias`.
        """
        self.require_intact()
        return self.get_alias(name)


def open_ledger(url: str) -> Ledger:
    """A ledger at ``url`` with its schema migrated to head (cheap when already current)."""
    ledger = Ledger(url)
    ledger.migrate()
    return ledger
