"""TrainConfig / EvalConfig: validation, config files, the canonical hash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shelfguard_train.config import (
    ConfigError,
    EvalConfig,
    TrainConfig,
    config_help,
    default_base_model,
    load_config,
)


def train_config(**overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "data_dir": "/data",
        "output_dir": "/out",
        "data_snapshot_id": "snap-1",
        "base_model": "/models/base",
    }
    values.update(overrides)
    return TrainConfig(**values)


def test_defaults_are_the_demo_settings() -> None:
    config = TrainConfig(data_dir=Path("/d"), output_dir=Path("/o"), data_snapshot_id="s")
    assert config.base_model == Path(default_base_model())
    assert (config.epochs, config.seed, config.device) == (1, 42, "auto")
    assert not config.shuffle_pairs
    assert config.resume_from_checkpoint


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"epochs": 1.5}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"batch_size": 1}, "batch_size must be at least 2"),
        ({"learning_rate": 0}, "learning_rate must be in (0, 1)"),
        ({"learning_rate": "fast"}, "learning_rate must be a number"),
        ({"warmup_ratio": 1.0}, "warmup_ratio must be in [0, 1)"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
        ({"hard_negatives": "yes"}, "hard_negatives must be true or false"),
        ({"shuffle_pairs": 1}, "shuffle_pairs must be true or false"),
        ({"data_snapshot_id": " "}, "data_snapshot_id must be a non-empty string"),
        ({"data_dir": ""}, "data_dir must be a non-empty path"),
        ({"max_seq_length": 0}, "max_seq_length must be >= 1"),
    ],
)
def test_train_config_rejects_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        train_config(**overrides)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": {}, "include_bm25": False}, "nothing to evaluate"),
        ({"models": {"bm25": "/m"}}, "'bm25' is reserved"),
        ({"models": ["/m"]}, "models must be a mapping"),
        ({"models": {"a": 3}}, "models.a must be a folder path"),
        ({"ks": []}, "ks must be a non-empty list"),
        ({"ks": [10, 0]}, "ks must be positive integers"),
    ],
)
def test_eval_config_rejects_bad_values(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"data_dir": "/d", "models": {"m": "/m"}, "output_path": "/o.json"}
    values.update(overrides)
    with pytest.raises(ConfigError) as excinfo:
        EvalConfig(**values)
    assert message in str(excinfo.value)


def test_eval_config_normalises_ks_and_paths() -> None:
    config = EvalConfig(data_dir="/d", models={"m": "/m"}, output_path="/o.json", ks=[100, 10, 10])  # type: ignore[arg-type]
    assert config.ks == (10, 100)
    assert config.models == {"m": Path("/m")}


def test_load_json_resolves_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "train.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                "data_dir": "../data",
                "output_dir": "/abs/out",
                "data_snapshot_id": "s",
                "base_model": "models/base",
                "epochs": 2,
            }
        )
    )
    config = load_config(path, TrainConfig)
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.output_dir == Path("/abs/out")
    assert config.base_model == (tmp_path / "cfg" / "models" / "base").resolve()
    assert config.epochs == 2


def test_load_yaml(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text(
        "data_dir: data\nmodels:\n  challenger: runs/model\noutput_path: out.json\n"
        "ks: [10, 100]\ninclude_bm25: false\n"
    )
    config = load_config(path, EvalConfig)
    assert config.models == {"challenger": tmp_path / "runs" / "model"}
    assert config.ks == (10, 100)
    assert not config.include_bm25


def test_unknown_keys_are_rejected_with_the_accepted_ones(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(
        json.dumps({"data_dir": "d", "output_dir": "o", "data_snapshot_id": "s", "epoch": 3})
    )
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, TrainConfig)
    message = str(excinfo.value)
    assert "unknown key(s) epoch" in message
    assert "epochs" in message and str(path) in message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"data_dir": "d"}', "missing required key(s) output_dir, data_snapshot_id"),
        ("{not json", "invalid JSON"),
        ("[1, 2]", "must be a mapping"),
        (
            '{"data_dir": "d", "output_dir": "o", "data_snapshot_id": "s", "epochs": -2}',
            "epochs must be >= 1",
        ),
    ],
)
def test_bad_files_fail_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "train.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as excinfo:
        load_config(path, TrainConfig)
    assert message in str(excinfo.value)
    assert str(path) in str(excinfo.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.json", TrainConfig)


def test_config_hash_is_canonical_and_ignores_where_the_run_executes() -> None:
    config = train_config()
    assert config.config_hash() == train_config().config_hash()
    assert len(config.config_hash()) == 64
    # Where data, model and output live, and how the run executes, are not the config's
    # identity: the pod and the local backend mount them at different paths.
    moved = train_config(
        data_dir="/elsewhere",
        output_dir="/tmp/o",
        base_model="/other/mount",
        resume_from_checkpoint=False,
        device="cpu",
        checkpoint_steps=7,
    )
    assert moved.config_hash() == config.config_hash()
    for changed in (
        train_config(seed=1),
        train_config(epochs=2),
        train_config(shuffle_pairs=True),
        train_config(data_snapshot_id="snap-2"),
        train_config(code_version="abc123"),
    ):
        assert changed.config_hash() != config.config_hash()
    canonical = json.loads(config.canonical_json())
    assert "output_dir" not in canonical and canonical["seed"] == 42


def test_help_lists_every_field() -> None:
    text = config_help(TrainConfig)
    for name in ("data_dir", "shuffle_pairs", "hard_negatives", "code_version"):
        assert f"  {name} " in text
    assert "(required)" in text
