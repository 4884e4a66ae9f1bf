"""``shelfguard``: the terminal entry point (``shelfguard.cli:main``).

Exit codes: 0 OK / PROMOTED, 1 FAILED, ABANDONED (its process died) or an error (including a ledger that fails
verification: ``verify``, ``status``, ``search`` and ``rollback`` exit 1 naming the
bad row), 2 bad usage or input, 3 BLOCKED by a gate, 4 REJECTED at approval.

The rooms: ``common`` (consoles, errors, progress, the home's ledger), ``parser`` (the
argument tree), ``entry`` (``main``), and the commands by family: ``runs``, ``demo``,
``governance`` (ledger and decisions), ``data`` and ``serving``.
"""

from __future__ import annotations

from shelfguard.cli.common import EXIT_CODES, TamperedError, UsageError
from shelfguard.cli.entry import main
from shelfguard.cli.parser import build_parser
from shelfguard.cli.runs import gate_rows, run_pipeline, status_payload
from shelfguard.cli.serving import search_champion

__all__ = [
    "EXIT_CODES",
    "TamperedError",
    "UsageError",
    "build_parser",
    "gate_rows",
    "main",
    "run_pipeline",
    "search_champion",
    "status_payload",
]
