"""``shelfguard.cli:main``: parse the command line, run the command, map errors to exit codes."""

from __future__ import annotations

import os
from collections.abc import Sequence

from shelfguard.cli import common
from shelfguard.cli.common import TamperedError, UsageError
from shelfguard.cli.parser import build_parser
from shelfguard.config import SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the command, map errors to exit codes."""
    parser = build_parser()
    if argv is None and "_ARGCOMPLETE" in os.environ:  # a shell asks for completions
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if "SHELFGUARD_HOME" not in os.environ and args.command not in ("keys", "completion"):
            # A home defaulted from the current folder is easy to mistake for another.
            common.console.print(
                f"[dim]home: {settings.home} (SHELFGUARD_HOME is not set)[/]", soft_wrap=True
            )
        code: int = args.func(args, settings)
    except (UsageError, SettingsError) as exc:
        # One line, never wrapped: scripts grep it, people read it.
        common.console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 2
    except TamperedError as exc:
        common.console.print(f"[bold red]tampered:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        common.console.print("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if os.environ.get("SHELFGUARD_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        common.console.print(
            f"[bold red]error:[/] {type(exc).__name__}: {first}".rstrip(": ")
            + " (set SHELFGUARD_DEBUG=1 for the traceback)",
            soft_wrap=True,
        )
        return 1
    return code
