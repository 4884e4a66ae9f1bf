"""The data commands: ``generate`` a store, ``ingest`` a delivery, ``simulate`` shoppers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from shelfguard.cli import common
from shelfguard.cli.common import UsageError, home_ledger, progress_bar
from shelfguard.config import Settings


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.data.generator import generate

    defects = [d.strip() for d in (args.defects or "").split(",") if d.strip()]
    out_dir = Path(args.out)
    blocker = next((p for p in (out_dir, *out_dir.parents) if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise UsageError(f"--out {args.out}: {blocker} exists and is not a folder")
    with progress_bar(not args.json) as progress:
        try:
            result = generate(
                out_dir,
                products=args.products,
                seed=args.seed,
                defects=defects,
                searches=args.searches,
                progress=progress,
                week=args.week,
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise UsageError(
                f"--out {args.out}: cannot write there: {exc.strerror or exc}"
            ) from exc
    if args.json:
        common.out.print_json(
            json.dumps(
                {
                    "out_dir": str(result.out_dir),
                    "files": {k: str(v) for k, v in result.files.items()},
                    "rows": result.rows,
                    "defects": list(result.defects),
                }
            )
        )
        return 0
    table = Table("file", "rows", title=f"generated in {result.out_dir}")
    for key, path in result.files.items():
        table.add_row(path.name, f"{result.rows.get(key, 0):,}")
    common.out.print(table)
    if result.defects:
        common.out.print(f"defects injected: {', '.join(result.defects)}")
    return 0


def print_manifest(manifest: dict[str, Any]) -> None:
    """The batch manifest as a table a person can read, then what it means."""
    table = Table(title=f"batch {manifest['batch_id']}")
    for column in ("file", "sha256", "read", "accepted", "quarantined", "by reason"):
        table.add_column(column, overflow="fold")
    for f in manifest["files"]:
        reasons = ", ".join(f"{k}={v}" for k, v in f["quarantine_by_reason"].items()) or "-"
        table.add_row(
            f["file_name"],
            f["sha256"][:12],
            f"{f['rows_read']:,}",
            f"{f['rows_accepted']:,}",
            f"{f['rows_quarantined']:,}",
            reasons,
        )
    common.out.print(table)
    old = [f["file_name"] for f in manifest["files"] if f.get("already_ingested")]
    if old and len(old) == len(manifest["files"]):
        common.out.print("every file was already ingested: nothing was added")
    elif old:
        common.out.print(f"already ingested, nothing added for: {', '.join(old)}")
    quarantined = sum(f["rows_quarantined"] for f in manifest["files"])
    if quarantined:
        common.out.print(
            f"{quarantined:,} row(s) quarantined with their reason and original bytes "
            "(tables quarantine.*); the raw-data gate decides whether that is acceptable"
        )
    drift = [
        f"{f['file_name']}: {', '.join(f['extra_columns'])}"
        for f in manifest["files"]
        if f["extra_columns"]
    ]
    if drift:
        common.out.print(f"[yellow]unexpected extra columns (not loaded): {'; '.join(drift)}[/]")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from shelfguard.data.ingest import IngestError, ingest
    from shelfguard.data.pseudonyms import PseudonymKeyError
    from shelfguard.data.publication import land

    settings.ensure_dirs()
    ledger = home_ledger(settings)
    try:
        with progress_bar(not args.json) as progress:
            manifest = ingest(Path(args.source), settings.warehouse_url, ledger, progress=progress)
        # Landed, not published: staging reads it only once a catalog_refresh run gates it.
        land(settings, ledger, manifest.batch_id, manifest.to_dict()["files"])
    except IngestError as exc:
        raise UsageError(f"ingest refused: {exc}") from exc
    except PseudonymKeyError as exc:
        raise UsageError(f"ingest cannot pseudonymise: {exc}") from exc
    finally:
        ledger.dispose()
    if args.json:
        common.out.print_json(manifest.to_json())
    else:
        print_manifest(manifest.to_dict())
    return 0


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    """Send simulated shoppers of a generated store to a running search service."""
    from shelfguard.data.generator import store_truth
    from shelfguard.serving.shoppers import (
        MAX_SESSIONS,
        SimulationError,
        check_loopback,
        simulate,
    )

    if not 1 <= args.sessions <= MAX_SESSIONS:
        raise UsageError(f"--sessions must be between 1 and {MAX_SESSIONS:,}, got {args.sessions}")
    try:
        url = check_loopback(args.url)
        try:
            truth = store_truth(args.products, args.seed, args.searches, week=args.week)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        with progress_bar(not args.json) as update:

            def advance(done: int, total: int) -> None:
                if update is not None:
                    update("simulated sessions", done, total)

            result = simulate(url, truth, args.sessions, seed=args.shopper_seed, progress=advance)
    except SimulationError as exc:
        raise UsageError(str(exc)) from exc
    summary = result.to_dict()
    if args.json:
        common.out.print_json(json.dumps(summary))
    else:
        table = Table(
            "index",
            "searches",
            "clicks",
            "CTR",
            "debiased CTR",
            "true nDCG@10",
            title=f"{summary['sessions']} simulated sessions against {url}",
        )
        for sha, traffic in summary["by_index"].items():
            table.add_row(
                sha[:12],
                str(traffic["searches"]),
                str(traffic["clicks"]),
                f"{traffic['ctr']:.3f}",
                f"{traffic['debiased_ctr']:.3f}",
                f"{traffic['true_ndcg@10']:.3f}",
            )
        common.out.print(table)
        if summary["errors"]:
            common.out.print(
                f"{summary['errors']} request(s) failed, e.g. {summary['first_errors'][0]}"
            )
    return 1 if summary["errors"] else 0
