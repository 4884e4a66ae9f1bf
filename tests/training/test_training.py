"""train(): examples and batches, seeded reproducibility, resume, and the model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shelfguard_train.config import ConfigError, TrainConfig
from shelfguard_train.data import DataContractError, Pair, Product, read_pairs, read_products
from shelfguard_train.model import CARD_FILENAME, load_model, model_sha256, resolve_runtime
from shelfguard_train.train import Example, TrainResult, build_batches, build_examples, train

PRODUCTS = [
    Product(1, "grey velvet sofa", "Sofas", "h1", "Furniture"),
    Product(2, "navy linen sofa", "Sofas", "h2", "Furniture"),
    Product(3, "oak coffee table", "Coffee Tables", "h3", "Furniture"),
    Product(4, "jute area rug", "Area Rugs", "h4", "Rugs"),
    Product(5, "walnut end table", "End Tables", "h5", "Furniture"),
]


def config_for(data: Path, model: Path, out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "data_dir": data,
        "output_dir": out,
        "base_model": model,
        "data_snapshot_id": "snap-tiny",
        "code_version": "test-sha",
        "batch_size": 16,
        "max_seq_length": 32,
        "learning_rate": 1e-3,
        "checkpoint_steps": 3,
        "device": "cpu",
    }
    values.update(overrides)
    return TrainConfig(**values)


def test_each_query_keeps_its_strongest_pairs_and_validation_is_held_out(
    tmp_path: Path,
) -> None:
    pairs = [
        Pair("sofa", 1, 1, 1.2, "train"),
        Pair("sofa", 5, 2, 4.5, "train"),
        Pair("sofa", 2, 3, 4.5, "train"),
        Pair("rug", 4, 1, 1.0, "train"),
        Pair("table", 3, 3, 6.0, "validation"),
    ]
    config = TrainConfig(
        data_dir=tmp_path, output_dir=tmp_path, data_snapshot_id="s", max_pairs_per_query=2
    )
    # Highest weight first, a purchase (grade 3) before a cart at equal weight.
    assert build_examples(pairs, PRODUCTS, config) == [
        Example("rug", 4),
        Example("sofa", 2),
        Example("sofa", 5),
    ]


def test_shuffled_pairs_keep_queries_but_lose_their_products(tmp_path: Path) -> None:
    pairs = [Pair(f"q{i}", 1 + i % 5, 1, 1.0, "train") for i in range(40)]
    base = TrainConfig(data_dir=tmp_path, output_dir=tmp_path, data_snapshot_id="s")
    honest = build_examples(pairs, PRODUCTS, base)
    broken = build_examples(
        pairs,
        PRODUCTS,
        TrainConfig(
            data_dir=tmp_path, output_dir=tmp_path, data_snapshot_id="s", shuffle_pairs=True
        ),
    )
    assert [e.query for e in broken] == [e.query for e in honest]
    assert sorted(e.positive for e in broken) == sorted(e.positive for e in honest)
    assert sum(a.positive != b.positive for a, b in zip(honest, broken, strict=True)) > 20


def test_hard_negatives_come_from_another_class_of_the_same_top_category(tmp_path: Path) -> None:
    pairs = [Pair("grey sofa", 1, 1, 1.0, "train"), Pair("table", 3, 1, 1.0, "train")]
    config = TrainConfig(
        data_dir=tmp_path, output_dir=tmp_path, data_snapshot_id="s", hard_negatives=True
    )
    examples = build_examples(pairs, PRODUCTS, config)
    by_id = {p.product_id: p for p in PRODUCTS}
    for example in examples:
        assert example.negative is not None
        negative, positive = by_id[example.negative], by_id[example.positive]
        assert negative.top_category == positive.top_category
        assert negative.product_class != positive.product_class


def test_pairs_must_point_at_known_products(tmp_path: Path) -> None:
    config = TrainConfig(data_dir=tmp_path, output_dir=tmp_path, data_snapshot_id="s")
    with pytest.raises(DataContractError, match=r"1 product_id\(s\) are not in products.parquet"):
        build_examples([Pair("sofa", 99, 1, 1.0, "train")], PRODUCTS, config)
    with pytest.raises(DataContractError, match="no rows with split 'train'"):
        build_examples([Pair("sofa", 1, 1, 1.0, "validation")], PRODUCTS, config)


def test_batches_never_repeat_a_query_or_a_product() -> None:
    examples = [Example(f"q{i % 7}", i % 11) for i in range(200)]
    batches = build_batches(examples, batch_size=8, seed=3, epoch=0)
    assert batches == build_batches(examples, batch_size=8, seed=3, epoch=0)
    assert batches != build_batches(examples, batch_size=8, seed=3, epoch=1)
    for batch in batches:
        assert 2 <= len(batch) <= 8
        assert len({examples[i].query for i in batch}) == len(batch)
        assert len({examples[i].positive for i in batch}) == len(batch)
    used = [i for batch in batches for i in batch]
    assert len(used) == len(set(used))


@pytest.fixture(scope="module")
def trained(
    tiny_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TrainConfig, TrainResult]:
    config = config_for(tiny_data, tiny_model, tmp_path_factory.mktemp("run-a"))
    return config, train(config)


def test_same_inputs_and_seed_give_the_same_weights(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, first = trained
    again = train(config_for(config.data_dir, config.base_model, tmp_path / "run-b"))
    assert again.model_sha256 == first.model_sha256
    reseeded = train(config_for(config.data_dir, config.base_model, tmp_path / "run-c", seed=7))
    assert reseeded.model_sha256 != first.model_sha256


def test_resume_after_a_crash_ends_with_the_same_weights(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, uninterrupted = trained
    out = tmp_path / "crashed"

    class Crash(Exception):
        pass

    def crash_at_step_4(step: int, total: int) -> None:
        assert total == uninterrupted.metrics["steps"]
        if step == 4:
            raise Crash

    with pytest.raises(Crash):
        train(config_for(config.data_dir, config.base_model, out), on_step=crash_at_step_4)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000003.pt"]
    assert not (out / "model").exists()

    resumed = train(config_for(config.data_dir, config.base_model, out))
    assert resumed.resumed_from_step == 3
    assert resumed.model_sha256 == uninterrupted.model_sha256
    assert not (out / "checkpoints").exists()


def test_a_checkpoint_from_another_config_is_refused(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    config, _ = trained
    out = tmp_path / "mixed"

    def stop(step: int, total: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config_for(config.data_dir, config.base_model, out), on_step=stop)
    with pytest.raises(ConfigError, match="written by a run with another config"):
        train(config_for(config.data_dir, config.base_model, out, learning_rate=5e-4))
    fresh = train(
        config_for(
            config.data_dir,
            config.base_model,
            out,
            learning_rate=5e-4,
            resume_from_checkpoint=False,
        )
    )
    assert fresh.resumed_from_step is None


def test_model_card_records_the_lineage(trained: tuple[TrainConfig, TrainResult]) -> None:
    config, result = trained
    model_dir = config.output_dir / "model"
    assert result.model_dir == model_dir
    for name in (
        "model.safetensors",
        "tokenizer.json",
        "config.json",
        "modules.json",
        CARD_FILENAME,
    ):
        assert (model_dir / name).is_file(), name
    card = json.loads((model_dir / CARD_FILENAME).read_text())
    assert card["data_snapshot_id"] == "snap-tiny"
    assert card["code_version"] == "test-sha"
    assert card["config_hash"] == config.config_hash() == result.config_hash
    assert card["config"]["seed"] == config.seed
    assert (
        card["base_model"]["sha256"] == model_sha256(config.base_model) == result.base_model_sha256
    )
    assert card["model_sha256"] == result.model_sha256 == model_sha256(model_dir)
    training = card["training"]
    for key in (
        "train_pairs",
        "train_examples",
        "steps",
        "seconds",
        "pairs_per_second",
        "final_loss",
    ):
        assert training[key] > 0, key
    assert training["train_pairs"] == sum(
        1 for p in read_pairs(config.data_dir) if p.split == "train"
    )
    assert 0.0 <= training["validation_accuracy"] <= 1.0
    assert training["device"] == "cpu" and training["precision"] == "fp32"
    assert card["objective"]["loss"] == "MultipleNegativesRankingLoss"
    assert result.to_dict()["model_sha256"] == result.model_sha256
    # The orchestrator evaluates the base model from the result's path.
    assert result.to_dict()["base_model"] == str(config.base_model)


def test_the_hash_covers_every_model_file_but_not_the_card(
    trained: tuple[TrainConfig, TrainResult], tmp_path: Path
) -> None:
    import shutil

    config, result = trained
    copy = tmp_path / "copy"
    shutil.copytree(config.output_dir / "model", copy)
    (copy / CARD_FILENAME).write_text("{}")
    assert model_sha256(copy) == result.model_sha256
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + " ")
    assert model_sha256(copy) != result.model_sha256


def test_the_saved_model_loads_and_keeps_its_sequence_length(
    trained: tuple[TrainConfig, TrainResult],
) -> None:
    config, result = trained
    model = load_model(result.model_dir, resolve_runtime("cpu"))
    assert model.max_seq_length == config.max_seq_length
    products = read_products(config.data_dir)
    vectors = model.encode([products[0].text], normalize_embeddings=True)
    assert vectors.shape[0] == 1


def test_missing_base_model_is_a_config_error(tiny_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model folder not found"):
        train(config_for(tiny_data, tmp_path / "no-model", tmp_path / "out"))


def test_asking_for_cuda_without_a_gpu_is_refused_in_one_line() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ConfigError, match=r"^device is 'cuda' but no CUDA device is available$"):
        resolve_runtime("cuda")
    assert resolve_runtime("auto").device == "cpu"
