"""Fine-tuning the real bundled all-MiniLM-L6-v2 on generated store data (slow, runs in CI).

With the default TrainConfig (what the demo uses), the challenger must beat the base
model on the golden set, and a model trained on shuffled pairs must do clearly worse
than the base model, so the evaluation gate has something to block.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shelfguard_train.config import EvalConfig, TrainConfig, default_base_model
from shelfguard_train.evaluate import evaluate
from shelfguard_train.train import train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("all_torch_threads")]

PRODUCTS = 500
SEED = 42


@pytest.fixture(scope="module")
def store(generated_inputs: Callable[..., Path]) -> Path:
    return generated_inputs(PRODUCTS, SEED)


@pytest.fixture(scope="module")
def baselines(store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    report = evaluate(
        EvalConfig(
            data_dir=store,
            models={"base": Path(default_base_model())},
            output_path=tmp_path_factory.mktemp("slow-eval") / "baselines.json",
            ks=(10,),
            device="cpu",
        )
    )
    return {name: model.overall for name, model in report.models.items()}


def fine_tune(store: Path, out: Path, **overrides: Any) -> dict[str, float]:
    result = train(
        TrainConfig(
            data_dir=store, output_dir=out, data_snapshot_id="slow-test", device="cpu", **overrides
        )
    )
    report = evaluate(
        EvalConfig(
            data_dir=store,
            models={"challenger": result.model_dir},
            output_path=out / "evaluation.json",
            include_bm25=False,
            ks=(10,),
            device="cpu",
        )
    )
    return report.models["challenger"].overall


def test_fine_tuning_beats_the_base_model(
    store: Path, baselines: dict[str, Any], tmp_path: Path
) -> None:
    challenger = fine_tune(store, tmp_path / "run")
    base, bm25 = baselines["base"], baselines["bm25"]
    assert challenger["ndcg@10"] >= base["ndcg@10"] + 0.05, (challenger, base)
    assert challenger["ndcg@10"] > bm25["ndcg@10"], (challenger, bm25)
    assert challenger["mrr@10"] > base["mrr@10"]


def test_shuffled_pairs_train_a_model_the_gate_must_block(
    store: Path, baselines: dict[str, Any], tmp_path: Path
) -> None:
    broken = fine_tune(store, tmp_path / "shuffled", shuffle_pairs=True)
    assert broken["ndcg@10"] <= baselines["base"]["ndcg@10"] - 0.05, (broken, baselines["base"])
