"""Command line: ``python -m shelfguard_train {train,evaluate,embed} --config FILE``.

``check-index --index-dir D --products P --model-dir M [--golden G]`` measures an
existing index the way ``embed`` measures the one it builds.

The training pod's ENTRYPOINT and the local subprocess backend both run this. Progress
goes to stderr; the result goes to stdout as one JSON document (and to
``--result-out`` when given), so the orchestrator reads it without parsing logs.

Exit codes: 0 success, 2 bad input (config, data contract, missing model: one line on
stderr, no traceback), 1 anything unexpected (with its traceback, it is a bug).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from shelfguard_train.config import (
    ConfigError,
    EmbedConfig,
    EvalConfig,
    TrainConfig,
    config_help,
    load_config,
)
from shelfguard_train.data import DataContractError
from shelfguard_train.embed import EmbedError

__all__ = ["EXIT_BAD_INPUT", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_BAD_INPUT = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shelfguard_train",
        description="shelfguard's training and evaluation entry points.",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="fine-tune the search model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (JSON or YAML):\n" + config_help(TrainConfig),
    )
    train.add_argument("--config", required=True, type=Path, help="TrainConfig file")
    train.add_argument("--result-out", type=Path, help="also write the result JSON here")
    evaluate = commands.add_parser(
        "evaluate",
        help="score models and BM25 on the golden set",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (JSON or YAML):\n" + config_help(EvalConfig),
    )
    evaluate.add_argument("--config", required=True, type=Path, help="EvalConfig file")
    evaluate.add_argument(
        "--result-out", type=Path, help="also write the report here (besides output_path)"
    )
    embed = commands.add_parser(
        "embed",
        help="embed the catalog into a search index and check it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (JSON or YAML):\n" + config_help(EmbedConfig),
    )
    embed.add_argument("--config", required=True, type=Path, help="EmbedConfig file")
    embed.add_argument("--result-out", type=Path, help="also write the result JSON here")
    check = commands.add_parser(
        "check-index", help="measure an index: coverage, vectors, model, ANN recall, canaries"
    )
    check.add_argument("--index-dir", required=True, type=Path, help="the index folder")
    check.add_argument("--products", required=True, type=Path, help="active products.parquet")
    check.add_argument("--model-dir", required=True, type=Path, help="the model to check against")
    check.add_argument("--golden", type=Path, help="golden.parquet for the canary queries")
    check.add_argument("--sample-size", type=int, default=500, help="ANN recall sample")
    check.add_argument("--k", type=int, default=10, help="cut-off for recall and canaries")
    check.add_argument("--seed", type=int, default=42, help="seeds the ANN recall sample")
    check.add_argument("--result-out", type=Path, help="also write the result JSON here")
    return parser


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Libraries speak only when something is wrong (bm25s, for one, sets its own logger
    # to DEBUG); the package's progress passes at the chosen level.
    handler.addFilter(
        lambda record: (
            record.levelno >= logging.WARNING or record.name.startswith("shelfguard_train")
        )
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("shelfguard_train").setLevel(level)


def _quiet_progress_bars() -> None:
    # Pod logs are files, not terminals: carriage-return progress bars only add noise,
    # and the training loop logs its own progress. Read by huggingface_hub on import.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _run(args: argparse.Namespace) -> dict[str, object]:
    if args.command == "train":
        from shelfguard_train.train import train

        return train(load_config(args.config, TrainConfig)).to_dict()
    if args.command == "embed":
        from shelfguard_train.embed import embed

        return embed(load_config(args.config, EmbedConfig)).to_dict()
    if args.command == "check-index":
        from shelfguard_train.embed import check_index

        if args.sample_size < 1 or args.k < 1:
            raise ConfigError("--sample-size and --k must be >= 1")
        return check_index(
            args.index_dir,
            args.products,
            args.model_dir,
            args.golden,
            sample_size=args.sample_size,
            k=args.k,
            seed=args.seed,
        )
    from shelfguard_train.evaluate import evaluate

    return evaluate(load_config(args.config, EvalConfig)).to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    _quiet_progress_bars()
    try:
        result = _run(args)
    except (ConfigError, DataContractError, EmbedError) as exc:
        print(f"shelfguard_train {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.result_out is not None:
        from shelfguard_train.evaluate import write_json

        write_json(args.result_out, result)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return EXIT_OK
