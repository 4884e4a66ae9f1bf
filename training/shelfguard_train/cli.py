"""Command line: ``python -m shelfguard_train {train,evaluate,embed} --config FILE``.

``check-index --index-dir D --products P --model-dir M [--golden G]`` measures an
existing index the way ``embed`` measures the one it builds.

The training pod's ENTRYPOINT and the local subprocess backend both run this. Progress
goes to stderr; the result goes to stdout as one JSON document (and to
``--result-out`` when given), so the orchestrator reads it without parsing logs.

``--config`` and ``--result-out`` may be fsspec URIs (``s3://``, ``gs://``, ``file://``…),
as may the path fields inside a config: ``storage.staged`` downloads the inputs, runs
the verb on local paths, uploads the outputs and writes the result (reporting the
URIs) last.

Exit codes: 0 success, 2 bad input (config, data contract, missing model: one line on
stderr, no traceback), 1 anything unexpected (with its traceback, it is a bug).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shelfguard_train.config import (
    ConfigError,
    EmbedConfig,
    EvalConfig,
    TrainConfig,
    config_help,
)
from shelfguard_train.data import DataContractError
from shelfguard_train.index_format import EmbedError
from shelfguard_train.storage import AnyConfig, staged, write_result

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
    result_json = "also write the result JSON here (path or URI)"
    verbs: tuple[tuple[str, str, type[TrainConfig | EvalConfig | EmbedConfig], str], ...] = (
        ("train", "fine-tune the search model", TrainConfig, result_json),
        (
            "evaluate",
            "score models and BM25 on the golden set",
            EvalConfig,
            "also write the report here, besides output_path (path or URI)",
        ),
        ("embed", "embed the catalog into a search index and check it", EmbedConfig, result_json),
    )
    for verb, what, config_cls, result_help in verbs:
        command = commands.add_parser(
            verb,
            help=what,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="config keys (JSON or YAML):\n" + config_help(config_cls),
        )
        command.add_argument("--config", required=True, help=f"{config_cls.__name__} file or URI")
        command.add_argument("--result-out", help=result_help)
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
    check.add_argument("--result-out", help="also write the result JSON here (path or URI)")
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


def _train(config: TrainConfig) -> dict[str, Any]:
    from shelfguard_train.train import train

    return train(config).to_dict()


def _evaluate(config: EvalConfig) -> dict[str, Any]:
    from shelfguard_train.evaluate import evaluate

    return evaluate(config).to_dict()


def _embed(config: EmbedConfig) -> dict[str, Any]:
    from shelfguard_train.embed import embed

    return embed(config).to_dict()


def _staged_run(
    config_cls: type[AnyConfig],
    run: Callable[[AnyConfig], dict[str, Any]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    # Inputs staged in before, outputs and then the result written out after a success.
    with staged(config_cls, args.config, args.result_out) as (config, finish):
        return finish(run(config))


def _run(args: argparse.Namespace) -> dict[str, Any]:
    if args.command == "train":
        return _staged_run(TrainConfig, _train, args)
    if args.command == "embed":
        return _staged_run(EmbedConfig, _embed, args)
    if args.command == "check-index":
        from shelfguard_train.index_checks import check_index

        if args.sample_size < 1 or args.k < 1:
            raise ConfigError("--sample-size and --k must be >= 1")
        result = check_index(
            args.index_dir,
            args.products,
            args.model_dir,
            args.golden,
            sample_size=args.sample_size,
            k=args.k,
            seed=args.seed,
        )
        if args.result_out is not None:
            write_result(args.result_out, result)
        return result
    return _staged_run(EvalConfig, _evaluate, args)


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
    json.dump(result, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return EXIT_OK
