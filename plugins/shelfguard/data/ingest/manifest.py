"""The batch manifest: what happened to each file of a batch, as ``--json`` prints it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from shelfguard.ledger import IngestFileRecord


@dataclass(frozen=True)
class FileManifest:
    """What happened to one file: the batch manifest's row for it."""

    file_name: str
    table: str
    sha256: str
    bytes: int
    rows_read: int
    rows_accepted: int
    rows_quarantined: int
    quarantine_by_reason: dict[str, int]
    extra_columns: list[str] = field(default_factory=list)
    already_ingested: bool = False


@dataclass(frozen=True)
class IngestManifest:
    """The batch manifest: one entry per file found in the source folder."""

    batch_id: str
    source: str
    files: list[FileManifest]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, the one ``shelfguard ingest --json`` prints."""
        return {
            "batch_id": self.batch_id,
            "source": self.source,
            "files": [asdict(f) for f in self.files],
        }

    def to_json(self) -> str:
        """The manifest as indented JSON."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


def _to_record(manifest: FileManifest, batch_id: str, run_id: str | None) -> IngestFileRecord:
    """The ledger's row for a file this batch loaded (the ledger fills in id and time)."""
    return IngestFileRecord(
        id=None,
        run_id=run_id,
        batch_id=batch_id,
        file_name=manifest.file_name,
        table_name=manifest.table,
        sha256=manifest.sha256,
        bytes=manifest.bytes,
        rows_read=manifest.rows_read,
        rows_accepted=manifest.rows_accepted,
        rows_quarantined=manifest.rows_quarantined,
        quarantine_by_reason=manifest.quarantine_by_reason,
        extra_columns=manifest.extra_columns,
        ingested_at=None,
    )


def _from_record(record: IngestFileRecord) -> FileManifest:
    return FileManifest(
        file_name=record.file_name,
        table=record.table_name,
        sha256=record.sha256,
        bytes=record.bytes,
        rows_read=record.rows_read,
        rows_accepted=record.rows_accepted,
        rows_quarantined=record.rows_quarantined,
        quarantine_by_reason=dict(record.quarantine_by_reason),
        extra_columns=list(record.extra_columns),
        already_ingested=True,
    )
