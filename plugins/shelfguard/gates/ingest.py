"""The ingest gate: did the landed files meet the file contract, and was every row kept?

Judges what the ingest task hands over (``evidence``): the batch manifest it landed
(``manifest``), or why the contract refused the batch (``refused``: an unknown file, a
missing column, a file that is not UTF-8 CSV...). A refused batch fails the gate with
the one check ``file_contract``; a landed one passes with one ``rows_conserved`` check
per file (every line read is either accepted or quarantined with its reason). The
subject is ``batch:<id>``. See docs/gates/ingest.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shelfguard.gates.core import GateOutcome

if TYPE_CHECKING:
    from shelfguard.gates.core import GateContext

GATE = "ingest"


def run(ctx: GateContext) -> GateOutcome:
    """The verdict on the ingest task's landing (``refused`` or ``manifest``)."""
    refused = ctx.evidence.get("refused")
    if refused is not None:
        check = {"name": "file_contract", "status": "fail", "severity": "error"}
        return GateOutcome.of(GATE, "", [{**check, "message": str(refused)}])
    manifest = ctx.evidence["manifest"]
    files = manifest["files"]
    checks = [
        {
            "name": f"rows_conserved:{f['file_name']}",
            "status": "pass",
            "severity": "error",
            "observed": f"{f['rows_read']} read = {f['rows_accepted']} accepted"
            f" + {f['rows_quarantined']} quarantined",
        }
        for f in files
    ]
    return GateOutcome.of(GATE, f"batch:{manifest['batch_id']}", checks, {"files": files})
