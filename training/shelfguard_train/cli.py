"""Command line: ``python -m shelfguard_train {train,evaluate} --config FILE``.

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
    EvalConfig,
    TrainConfig,
    config_help,
    load_config,
)
from shelfguard_train.data import DataContractError

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
    from shelfguard_train.evaluate import evaluate

    return evaluate(load_config(args.config, EvalConfig)).to_dict()


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    _quiet_progress_bars()
    try:
        result = _run(args)
    except (ConfigError, DataContractError) as exc:
        print(f"shelfguard_train {args.command}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.result_out is not None:
        from shelfguard_train.evaluate import write_json

        write_json(args.result_out, result)
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return EXIT_OK
