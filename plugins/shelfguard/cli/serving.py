"""The model-serving commands: ``search`` with the champion, ``serve`` search over HTTP,
``canary status`` and ``ui`` (Airflow's UI with the governance console)."""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path
from typing import Any

from rich.table import Table

from shelfguard.cli import common
from shelfguard.cli.common import TamperedError, UsageError, home_ledger
from shelfguard.config import Settings


def search_champion(settings: Settings, query: str, k: int) -> tuple[Any, list[Any]]:
    """Search the catalog with the champion pair; refuses a model and index that do not belong together."""
    if not query.strip():
        raise UsageError(
            'empty query: give the words to search for, e.g. shelfguard search "oak desk"'
        )
    if k < 1:
        raise UsageError(f"-k must be at least 1, got {k}")
    from shelfguard.ledger import LedgerTampered
    from shelfguard.serving.pairs import PairRefused, open_pair

    ledger = home_ledger(settings)
    try:
        try:
            champion = ledger.verify_champion("champion")
        except LedgerTampered as exc:
            raise TamperedError(f"refusing to search: {exc}") from exc
        if champion is None:
            raise UsageError(
                "no champion yet: nothing has been promoted "
                "(run search_model_retraining until it ends PROMOTED, e.g. make demo)"
            )
        try:
            pair = open_pair(settings, ledger, champion, device="auto", verified=True)
        except PairRefused as exc:
            raise UsageError(f"refusing to search: {exc}") from exc
    finally:
        ledger.dispose()
    return champion, pair.searcher.search(query, k)


def print_hits(query: str, hits: list[Any]) -> None:
    """Search results as a table."""
    table = Table("#", "product_id", "score", "product", "class", title=f"search: {query!r}")
    for hit in hits:
        table.add_row(
            str(hit.rank),
            str(hit.product_id),
            f"{hit.score:.3f}",
            hit.product_name,
            hit.product_class,
        )
    common.out.print(table)


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    champion, hits = search_champion(settings, args.query, args.k)
    if args.json:
        common.out.print_json(
            json.dumps(
                {
                    "query": args.query,
                    "champion": {
                        "version": champion.version,
                        "model_sha256": champion.model.sha256,
                        "index_sha256": champion.index.sha256,
                    },
                    "hits": [
                        {
                            "rank": h.rank,
                            "product_id": h.product_id,
                            "score": round(float(h.score), 6),
                            "product_name": h.product_name,
                            "product_class": h.product_class,
                        }
                        for h in hits
                    ],
                }
            )
        )
    else:
        print_hits(args.query, hits)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Serve product search from the champion pair, following the alias, until interrupted."""
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")
    if not 1 <= args.workers <= 64:
        raise UsageError(f"--workers must be between 1 and 64, got {args.workers}")
    for name in ("poll_seconds", "click_window", "rotate_seconds"):
        if getattr(args, name) <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be above 0")
    if args.canary_share is not None and not 0 < args.canary_share <= 0.5:
        raise UsageError(f"--canary-share must be above 0 and at most 0.5, got {args.canary_share}")
    import uvicorn

    from shelfguard.serving.app import OPTIONS_ENV, ServeOptions

    options = ServeOptions(
        poll_seconds=args.poll_seconds,
        click_window=args.click_window,
        rotate_seconds=args.rotate_seconds,
        log_dir=str(Path(args.log_dir).resolve()) if args.log_dir else None,
        canary_share=args.canary_share,
    )
    os.environ[OPTIONS_ENV] = options.to_env()
    # The workers share the cores: each encodes on its share of them.
    threads = max(1, (os.cpu_count() or 1) // args.workers)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    log_dir = options.log_folder(settings)
    common.out.print(
        f"serving search on http://{args.host}:{args.port} (docs at /docs), "
        f"{args.workers} worker(s), following the champion in {settings.ledger_url}; "
        f"served searches go to {log_dir}"
    )
    uvicorn.run(
        "shelfguard.serving.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=not args.no_access_log,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0


def cmd_canary_status(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard canary status``: what the running canary and the champion served, and
    the online gate's verdict on it so far."""
    from shelfguard.model import canary
    from shelfguard.policy import CanaryPolicy
    from shelfguard.policy_approval import in_force
    from shelfguard.serving.app import ServeOptions

    folder = Path(args.log_dir) if args.log_dir else ServeOptions().log_folder(settings)
    ledger = home_ledger(settings)
    try:
        found = in_force(ledger)
        policy = found.policy.canary if found is not None else CanaryPolicy()
        try:
            evidence = canary.evidence(ledger, folder, policy)
        except canary.CanaryError as exc:
            raise UsageError(str(exc)) from exc
    finally:
        ledger.dispose()
    verdict = canary.judge(evidence, policy)
    arms = {
        name: {
            "model_sha256": pair[0],
            "index_sha256": pair[1],
            "sessions": arm.sessions,
            "searches": arm.searches,
            "impressions": arm.impressions,
            "clicks": arm.clicks,
            policy.metric: round(arm.value, 6),
        }
        for name, arm, pair in (
            ("champion", evidence.champion, evidence.champion_pair),
            ("challenger", evidence.challenger, evidence.challenger_pair),
        )
    }
    payload = {
        "arms": arms,
        "decided": verdict.decided,
        "passed": verdict.passed,
        "difference": round(verdict.difference, 6),
        "lower_bound": None if not verdict.decided else round(verdict.lower, 6),
        "reason": verdict.reason,
    }
    if args.json:
        common.out.print_json(json.dumps(payload))
        return 0
    table = Table(title=f"canary: {policy.metric} by the pair that answered ({folder})")
    for column in ("arm", "model", "index", "sessions", "searches", "impressions", policy.metric):
        table.add_column(column)
    for name, arm in arms.items():
        table.add_row(
            name,
            str(arm["model_sha256"])[:12],
            str(arm["index_sha256"])[:12],
            f"{arm['sessions']:,}",
            f"{arm['searches']:,}",
            f"{arm['impressions']:,}",
            f"{arm[policy.metric]:.4f}",
        )
    common.out.print(table)
    word = "undecided" if not verdict.decided else ("passes" if verdict.passed else "fails")
    common.out.print(f"online gate {word}: {verdict.reason}")
    return 0


def cmd_ui(args: argparse.Namespace, settings: Settings) -> int:
    """Serve Airflow's UI with the governance console on this home until interrupted."""
    from shelfguard.console.server import (
        DEMO_USERS,
        ConsoleError,
        console_url,
        ensure_demo_passwords,
        passwords_file,
        start_api_server,
        stop_api_server,
        wait_until_ready,
    )

    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {args.port}")

    def stopped(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the server as Ctrl-C does

    signal.signal(signal.SIGTERM, stopped)
    proc = start_api_server(settings, args.host, args.port)
    try:
        try:
            wait_until_ready(proc, args.host, args.port)
        except ConsoleError as exc:
            raise UsageError(f"{exc} (is port {args.port} free? try --port)") from exc
        common.out.print(f"governance console: {console_url(args.host, args.port)}")
        common.out.print(f"Airflow UI:         http://{args.host}:{args.port}/ (menu: Governance)")
        for name, password in ensure_demo_passwords(settings).items():
            common.out.print(f"  user {name} ({DEMO_USERS[name]}), password {password}")
        common.out.print(
            f"  (passwords kept in {passwords_file(settings)}); Ctrl-C stops the server"
        )
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_api_server(proc)
