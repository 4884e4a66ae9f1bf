"""The argument tree of every ``shelfguard`` subcommand, and its shell completion."""

from __future__ import annotations

import argparse
import sys

from shelfguard.cli.data import cmd_generate, cmd_ingest, cmd_simulate
from shelfguard.cli.demo import cmd_demo
from shelfguard.cli.governance import (
    cmd_batches,
    cmd_decide,
    cmd_gc,
    cmd_keys,
    cmd_policy,
    cmd_rollback,
    cmd_verify,
)
from shelfguard.cli.runs import cmd_history, cmd_report, cmd_run, cmd_status
from shelfguard.cli.serving import cmd_canary_status, cmd_search, cmd_serve, cmd_ui
from shelfguard.config import Settings

_EPILOG = """\
examples:
  shelfguard demo                                   generate data, refresh, train, promote
  shelfguard run catalog_refresh --source data/     land, gate and publish a delivery
  shelfguard status                                 the champion and the recent runs
  shelfguard approve latest --by alice              sign the approval a run waits for
  eval "$(shelfguard completion bash)"              complete commands and options in bash

exit codes:
  0 OK or PROMOTED   1 FAILED, ABANDONED or an error (a tampered ledger included)
  2 bad usage or input   3 BLOCKED by a gate   4 REJECTED at approval

environment:
  SHELFGUARD_HOME            the home (default ./.shelfguard): ledger, warehouse, artifacts
  SHELFGUARD_POLICY          the policy file (default governance.yml)
  SHELFGUARD_KEYS_DIR        personal signing keys (default ~/.shelfguard/keys)
  SHELFGUARD_WAREHOUSE_URL, SHELFGUARD_LEDGER_URL, SHELFGUARD_ARTIFACT_ROOT
                             production stores (README, "Settings")
  SHELFGUARD_DEBUG=1         show the traceback of an unexpected failure
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    from shelfguard import __version__

    parser = argparse.ArgumentParser(
        prog="shelfguard",
        description="shelfguard: governed data and search-model pipelines on Airflow.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"shelfguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a WANDS-layout dataset with behaviour logs")
    gen.add_argument("--out", required=True, help="output folder")
    gen.add_argument("--products", type=int, default=2000, help="catalog size (default 2000)")
    gen.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    gen.add_argument("--searches", type=int, default=None, help="searches in the behaviour log")
    gen.add_argument("--defects", default="", help="comma-separated defect names to inject")
    gen.add_argument(
        "--week",
        type=int,
        default=1,
        help="week N of the store of this seed: week N-1 with its change feed applied, "
        "new searches whose ids never repeat (default 1)",
    )
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    gen.set_defaults(func=cmd_generate)

    ing = sub.add_parser("ingest", help="load a folder of raw files into the warehouse")
    ing.add_argument("--source", required=True, help="folder with product.csv and friends")
    ing.add_argument("--json", action="store_true", help="print the batch manifest as JSON")
    ing.set_defaults(func=cmd_ingest)

    run = sub.add_parser("run", help="run a DAG on the embedded default and print its outcome")
    run.add_argument("dag_id", help="catalog_refresh, ...")
    run.add_argument("--source", default=None, help="folder to ingest (catalog_refresh)")
    run.add_argument(
        "--conf", default=None, help='run conf / params as JSON, e.g. \'{"train": {"epochs": 2}}\''
    )
    run.add_argument("--json", action="store_true", help="print the outcome as JSON")
    run.set_defaults(func=cmd_run)

    bat = sub.add_parser(
        "batches", help="landed batches and their state: landed, gated, published, blocked, purged"
    )
    bat.add_argument("--limit", type=int, default=50, help="how many batches (default 50)")
    bat.add_argument("--state", default=None, help="only batches in this state")
    bat.add_argument("--json", action="store_true", help="print as JSON")
    bat.set_defaults(func=cmd_batches, action=None)
    bat_sub = bat.add_subparsers(dest="action")
    purge = bat_sub.add_parser(
        "purge", help="delete a blocked batch's raw and quarantined rows (recorded)"
    )
    purge.add_argument("batch_id", help="a blocked batch, from `shelfguard batches`")
    purge.add_argument(
        "--by", required=True, help="who purges it: an approver, signing with their key"
    )
    purge.add_argument("--reason", required=True, help="why (kept in the ledger)")
    purge.add_argument("--json", action="store_true", help="print the purged batch as JSON")
    purge.set_defaults(func=cmd_batches)

    st = sub.add_parser("status", help="the champion and the recent runs with their gates")
    st.add_argument("--limit", type=int, default=10, help="how many runs (default 10)")
    st.add_argument("--json", action="store_true", help="print as JSON")
    st.set_defaults(func=cmd_status)

    ver = sub.add_parser(
        "verify", help="check the ledger's hash chain: exit 0 intact, 1 naming the first bad row"
    )
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=cmd_verify)

    rep = sub.add_parser("report", help="write the governance report (HTML + JSON) of a run")
    rep.add_argument("run_id", help="a run id from `shelfguard status`, or `latest`")
    rep.add_argument(
        "--out", default=None, help="folder to write to (default: $SHELFGUARD_HOME/reports/RUN)"
    )
    rep.add_argument("--json", action="store_true", help="print the report JSON")
    rep.set_defaults(func=cmd_report)

    for verb, what in (("approve", "approve"), ("reject", "reject")):
        decide = sub.add_parser(verb, help=f"{what} the promotion a run waits for")
        decide.add_argument("run_id", help="the run id from `shelfguard status`, or `latest`")
        decide.add_argument(
            "--by",
            required=True,
            help="your name, as listed in approval.approvers; signs with your key",
        )
        decide.add_argument("--comment", default="", help="why (kept in the ledger)")
        decide.set_defaults(func=cmd_decide)

    back = sub.add_parser("rollback", help="move the champion back to an earlier approved pair")
    back.add_argument("--to", type=int, default=None, help="version (default: the one before)")
    back.add_argument(
        "--by",
        required=True,
        help="who rolls back: an approver of the policy in force, signing with their key",
    )
    back.add_argument("--reason", default="", help="why (kept in alias_history)")
    back.set_defaults(func=cmd_rollback)

    keys = sub.add_parser("keys", help="your personal signing key for decisions")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    key_new = keys_sub.add_parser("new", help="make a key pair; prints the public key")
    key_new.add_argument("name", help="your approver name")
    key_new.add_argument("--force", action="store_true", help="replace an existing key")
    key_new.set_defaults(func=cmd_keys)
    key_show = keys_sub.add_parser("show", help="print the public key of NAME's key pair")
    key_show.add_argument("name", help="an approver name")
    key_show.set_defaults(func=cmd_keys)

    pol = sub.add_parser("policy", help="the policy in force, and putting a new one in force")
    pol_sub = pol.add_subparsers(dest="action", required=True)
    pol_approve = pol_sub.add_parser(
        "approve", help="put a policy file in force (a signed decision of an approver)"
    )
    pol_approve.add_argument(
        "file", nargs="?", default=None, help="policy file (default: $SHELFGUARD_POLICY)"
    )
    pol_approve.add_argument("--by", required=True, help="your approver name; signs with your key")
    pol_approve.add_argument("--comment", default="", help="why (kept in the ledger)")
    pol_approve.add_argument("--json", action="store_true", help="print as JSON")
    pol_approve.set_defaults(func=cmd_policy)
    pol_show = pol_sub.add_parser("show", help="the policy in force and who approved it")
    pol_show.add_argument("--json", action="store_true", help="print as JSON")
    pol_show.set_defaults(func=cmd_policy)

    hist = sub.add_parser("history", help="every champion version, and the recent outcomes")
    hist.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
    hist.add_argument("--json", action="store_true", help="print as JSON")
    hist.set_defaults(func=cmd_history)

    gc = sub.add_parser(
        "gc", help="remove stored models and indexes no alias, pending run or window needs"
    )
    gc.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    gc.add_argument(
        "--keep-days",
        type=float,
        default=7.0,
        help="keep everything registered in the last N days (default 7)",
    )
    gc.add_argument("--json", action="store_true", help="print as JSON")
    gc.set_defaults(func=cmd_gc)

    search = sub.add_parser("search", help="search the catalog with the champion model and index")
    search.add_argument("query", help="what a shopper would type")
    search.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    search.add_argument("--json", action="store_true", help="print the results as JSON")
    search.set_defaults(func=cmd_search)

    demo = sub.add_parser("demo", help="generate demo data and run the pipeline end to end")
    demo.add_argument("--products", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=42)
    demo.set_defaults(func=cmd_demo)

    completion = sub.add_parser(
        "completion",
        help="print the shell code that completes shelfguard's commands and options",
        description='Add to ~/.bashrc: eval "$(shelfguard completion bash)" '
        "(zsh and fish likewise).",
    )
    completion.add_argument("shell", choices=("bash", "zsh", "fish"), help="your shell")
    completion.set_defaults(func=cmd_completion)

    # shelfguard ui (the governance console)
    ui = sub.add_parser("ui", help="serve Airflow's UI with the governance console (demo users)")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ui.set_defaults(func=cmd_ui)
    serve = sub.add_parser(
        "serve", help="serve product search from the champion, swapping as the alias moves"
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument(
        "--poll-seconds", type=float, default=1.0, help="how often to read the alias (default 1)"
    )
    serve.add_argument(
        "--click-window",
        type=float,
        default=600.0,
        help="seconds after a search that its clicks are taken (default 600)",
    )
    serve.add_argument(
        "--rotate-seconds",
        type=float,
        default=300.0,
        help="how often served searches are written out as a delivery folder (default 300)",
    )
    serve.add_argument(
        "--log-dir", help="where delivery folders go (default: <landing folder>/served)"
    )
    serve.add_argument("--no-access-log", action="store_true", help="no line per request")
    serve.add_argument(
        "--canary-share",
        type=float,
        help="share of sessions a running canary answers (default: the policy in force)",
    )
    serve.set_defaults(func=cmd_serve)
    canary_cmd = sub.add_parser(
        "canary", help="a challenger tried on a share of shoppers before it is champion"
    )
    canary_sub = canary_cmd.add_subparsers(dest="canary_command", required=True)
    canary_status = canary_sub.add_parser(
        "status", help="what the canary and the champion served, and the online verdict"
    )
    canary_status.add_argument(
        "--log-dir", help="the service's delivery folders (default: <landing folder>/served)"
    )
    canary_status.add_argument("--json", action="store_true", help="print the status as JSON")
    canary_status.set_defaults(func=cmd_canary_status)
    simulate = sub.add_parser(
        "simulate",
        help="send simulated shoppers of a generated store to a running search service",
    )
    simulate.add_argument("--sessions", type=int, required=True, help="shopping sessions to run")
    simulate.add_argument(
        "--url", default="http://127.0.0.1:8080", help="the service (loopback only)"
    )
    simulate.add_argument(
        "--products", type=int, default=2000, help="the store's generate --products (default 2000)"
    )
    simulate.add_argument(
        "--seed", type=int, default=42, help="the store's generate --seed (default 42)"
    )
    simulate.add_argument("--searches", type=int, help="the store's generate --searches")
    simulate.add_argument(
        "--week", type=int, default=1, help="the store's generate --week (default 1)"
    )
    simulate.add_argument(
        "--shopper-seed", type=int, default=0, help="seed of the shoppers' choices (default 0)"
    )
    simulate.add_argument("--json", action="store_true", help="print the summary as JSON")
    simulate.set_defaults(func=cmd_simulate)
    return parser


def cmd_completion(args: argparse.Namespace, settings: Settings) -> int:
    """``shelfguard completion SHELL``: the completion code for that shell (argcomplete)."""
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["shelfguard"], shell=args.shell))
    return 0
