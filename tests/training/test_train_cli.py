"""``python -m shelfguard_train``: exit codes, JSON on stdout, one-line user errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shelfguard_train.cli import EXIT_BAD_INPUT, EXIT_OK, main


def write_config(path: Path, payload: dict[str, Any]) -> Path:
    path.write_text(json.dumps(payload))
    return path


def train_payload(data: Path, model: Path, out: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data),
        "output_dir": str(out),
        "base_model": str(model),
        "data_snapshot_id": "snap-cli",
        "batch_size": 16,
        "max_seq_length": 32,
        "device": "cpu",
    }


def test_train_and_evaluate_succeed_and_print_json(
    tmp_path: Path, tiny_data: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path / "train.json", train_payload(tiny_data, tiny_model, tmp_path / "run")
    )
    result_out = tmp_path / "result" / "train.json"
    assert main(["train", "--config", str(config), "--result-out", str(result_out)]) == EXIT_OK
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(result_out.read_text())
    assert printed["data_snapshot_id"] == "snap-cli"
    assert Path(printed["model_dir"]).is_dir()

    eval_config = write_config(
        tmp_path / "eval.json",
        {
            "data_dir": str(tiny_data),
            "models": {"challenger": printed["model_dir"], "base": str(tiny_model)},
            "output_path": str(tmp_path / "eval-out.json"),
            "device": "cpu",
        },
    )
    copy = tmp_path / "copy" / "evaluation.json"
    assert main(["evaluate", "--config", str(eval_config), "--result-out", str(copy)]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == {"challenger", "base", "bm25"}
    assert report == json.loads((tmp_path / "eval-out.json").read_text())
    assert report == json.loads(copy.read_text())


@pytest.mark.parametrize(
    ("command", "payload", "message"),
    [
        ("train", {"data_dir": "d", "output_dir": "o"}, "missing required key(s) data_snapshot_id"),
        (
            "train",
            {"data_dir": "d", "output_dir": "o", "data_snapshot_id": "s", "lr": 1},
            "unknown key(s) lr",
        ),
        (
            "evaluate",
            {"data_dir": "d", "models": {}, "output_path": "o", "include_bm25": False},
            "nothing to evaluate",
        ),
    ],
)
def test_bad_configs_exit_2_with_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    payload: dict[str, Any],
    message: str,
) -> None:
    config = write_config(tmp_path / "cfg.json", payload)
    assert main([command, "--config", str(config)]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err


def test_broken_data_exits_2(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "empty-data"
    data.mkdir()
    config = write_config(
        tmp_path / "train.json", train_payload(data, tiny_model, tmp_path / "run")
    )
    assert main(["train", "--config", str(config)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "pairs.parquet: file not found" in err and "Traceback" not in err


def test_module_entry_point_reports_user_errors_without_traceback(tmp_path: Path) -> None:
    config = write_config(tmp_path / "cfg.json", {"data_dir": "d"})
    done = subprocess.run(
        [sys.executable, "-m", "shelfguard_train", "train", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip().startswith("shelfguard_train train: ")
    assert "Traceback" not in done.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "shelfguard_train", "fly"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
