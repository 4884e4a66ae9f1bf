"""What every ``shelfguard`` command shares: the two consoles, the errors that map to
exit codes, the progress bar and the home's ledger.

Commands print through ``common.out`` and ``common.console`` (looked up when they print),
so a caller that swaps them here captures every command's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from shelfguard.config import Settings

EXIT_CODES = {"OK": 0, "PROMOTED": 0, "FAILED": 1, "ABANDONED": 1, "BLOCKED": 3, "REJECTED": 4}
OUTCOME_STYLE = {"OK": "green", "PROMOTED": "green", "BLOCKED": "red", "REJECTED": "yellow"}


console = Console(stderr=True)
out = Console(soft_wrap=True)


class UsageError(Exception):
    """Bad input from the user: reported in one line, exit code 2."""


class TamperedError(Exception):
    """The ledger failed verification: reported in one line naming the bad row, exit code 1."""


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A progress bar callback ``(stage, done, total)``, or a no-op when output is JSON."""
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description:<32}"),
        BarColumn(),
        TextColumn("{task.completed:>,}/{task.total:,}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield update


def home_ledger(settings: Settings) -> Any:
    """The home's ledger, once runs whose process died are marked ABANDONED."""
    from shelfguard.ledger import open_ledger
    from shelfguard.liveness import reap_abandoned

    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    reap_abandoned(settings, ledger)
    return ledger


def checked_limit(limit: int) -> int:
    """``--limit`` as given, refused below 1 (every listing command takes one)."""
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    return limit
