"""``shelfguard demo``: generate a store's week and run both DAGs end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from shelfguard.cli import common
from shelfguard.cli.common import EXIT_CODES, progress_bar
from shelfguard.cli.runs import print_run, run_pipeline, status_payload
from shelfguard.cli.serving import print_hits, search_champion
from shelfguard.config import Settings


def print_metrics(metrics: dict[str, dict[str, float]]) -> None:
    """Golden-set metrics per ranker, challenger first."""
    table = Table(title="golden-set evaluation (whole catalog ranked per query)")
    columns = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
    table.add_column("ranker")
    for column in columns:
        table.add_column(column, justify="right")
    for name in ("challenger", "champion", "base", "bm25"):
        if name in metrics:
            table.add_row(name, *(f"{metrics[name].get(c, float('nan')):.4f}" for c in columns))
    common.out.print(table)


def demo_queries(data_dir: Path, n: int = 3) -> list[str]:
    """Golden queries of ``n`` different product classes from the generated ``query.csv``."""
    chosen: dict[str, str] = {}
    lines = (data_dir / "query.csv").read_text(encoding="utf-8").splitlines()[1:]
    for line in lines:
        _, query, query_class = ([*line.split("\t"), "", ""])[:3]
        if query and query_class and query_class not in chosen:
            chosen[query_class] = query
        if len(chosen) == n:
            break
    return list(chosen.values())


def _demo_week(settings: Settings, seed: int) -> tuple[int, Path]:
    """The week of the store of ``seed`` this demo lands: 1, then one more each time it
    runs in the same home; and its folder."""
    folder = settings.home / "demo-data" / f"seed-{seed}"
    landed = [p for p in folder.glob("week-*") if p.name.removeprefix("week-").isdigit()]
    week = 1 + max((int(p.name.removeprefix("week-")) for p in landed), default=0)
    return week, folder / f"week-{week}"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """Generate the demo dataset and run both DAGs end to end on the embedded default."""
    from shelfguard.data.generator import generate

    settings.ensure_dirs()
    week, data_dir = _demo_week(settings, args.seed)
    before = status_payload(settings, limit=1)["champion"]
    common.out.rule("shelfguard demo (embedded: SQLite Airflow, DuckDB warehouse, SQLite ledger)")
    common.out.print(f"home: {settings.home}")
    if before:
        common.out.print(
            f"a champion exists (v{before['version']}, run {before['run_id']}): this demo lands "
            f"week {week} of the same store (seed {args.seed}): last week's catalog with its "
            "change feed applied, and new searches. The new model is judged against the champion"
        )
    with progress_bar(True) as progress:
        result = generate(
            data_dir, products=args.products, seed=args.seed, progress=progress, week=week
        )
    common.out.print(
        f"1. generated {result.rows['product']:,} products, {result.rows['query']:,} golden queries,"
        f" {result.rows['label']:,} judgements, {result.rows['search_log']:,} search impressions"
        f" in {data_dir}"
    )
    common.out.print(
        "2. catalog_refresh: ingest -> raw-data gate (GX) -> dbt via Cosmos -> "
        "training-data gate (GX) -> publish the marts Assets"
        + (" -> incremental re-embedding with the champion -> index gate" if before else "")
    )
    outcome, summary = run_pipeline(settings, "catalog_refresh", str(data_dir), quiet=False)
    print_run(summary)
    if outcome != "OK":
        return EXIT_CODES.get(outcome, 1)
    common.out.print(
        "3. search_model_retraining: training-data gate -> fine-tune all-MiniLM-L6-v2 "
        "(local subprocess, the pod's entry point) -> evaluation gate -> embed the catalog "
        "-> index gate -> approval -> promote"
    )
    outcome, summary = run_pipeline(settings, "search_model_retraining", None, quiet=False)
    print_run(summary)
    status = status_payload(settings, limit=1)
    metrics = status["runs"][0].get("metrics") if status["runs"] else None
    if metrics:
        print_metrics(metrics)
    champion = status["champion"]
    if champion:
        common.out.print(
            f"champion v{champion['version']}: model {champion['model']['sha256'][:12]} + index "
            f"{champion['index']['sha256'][:12]} (run {champion['run_id']})"
        )
        for query in demo_queries(data_dir):
            _, hits = search_champion(settings, query, 5)
            print_hits(query, hits)
    if outcome == "BLOCKED" and before:
        common.out.print(
            "[yellow]The new model did not pass the evaluation gate against the champion: "
            f"champion v{champion['version'] if champion else '?'} stays in production, "
            "which is the gate doing its job.[/]"
        )
    common.out.print(
        f'next: .venv/bin/shelfguard status | search "QUERY" | rollback'
        f"   (SHELFGUARD_HOME={settings.home})"
    )
    # The demo ends well when the pipeline reached a governance decision; only an
    # error (FAILED), or a first run that promotes nothing, is a failed demo.
    if outcome in ("BLOCKED", "REJECTED") and before:
        return 0
    return EXIT_CODES.get(outcome, 1)
