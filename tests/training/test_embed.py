"""embed(): the index folder, reproducible sha256, incremental updates, checks and the CLI."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shelfguard_train import ann as ann_module
from shelfguard_train import embed as embed_module
from shelfguard_train import text_encoder as text_encoder_module
from shelfguard_train.cli import EXIT_BAD_INPUT, EXIT_OK, main
from shelfguard_train.config import (
    ConfigError,
    EmbedConfig,
    config_help,
    default_base_model,
    load_config,
)
from shelfguard_train.embed import (
    INDEX_FILES,
    MANIFEST_FILE,
    PRODUCTS_FILE,
    VECTORS_FILE,
    EmbedError,
    EmbedResult,
    check_index,
    embed,
    encode_texts,
    index_sha256,
    read_catalog,
)
from shelfguard_train.model import Runtime, load_model, model_sha256
from shelfguard_train.search import CatalogSearcher

CPU = Runtime(device="cpu")


def embed_config(products: Path, model: Path, out: Path, **overrides: Any) -> EmbedConfig:
    values: dict[str, Any] = {
        "model_dir": model,
        "products_path": products,
        "output_dir": out,
        "batch_size": 16,
        "device": "cpu",
        # Fixed, so the tests see the same numbers on CPUs with and without native bf16.
        "precision": "fp32",
    }
    values.update(overrides)
    return EmbedConfig(**values)


def product_rows(data: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(data / "products.parquet").to_pylist()
    return rows


def write_products(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(list(rows)), path)
    return path


def with_text(row: dict[str, Any], text: str) -> dict[str, Any]:
    return {**row, "text_to_embed": text, "content_hash": hashlib.sha256(text.encode()).hexdigest()}


def index_vectors(index_dir: Path) -> npt.NDArray[np.float32]:
    return np.asarray(np.load(index_dir / VECTORS_FILE), dtype=np.float32)


def index_ids(index_dir: Path) -> list[int]:
    ids: list[int] = pq.read_table(index_dir / PRODUCTS_FILE).column("product_id").to_pylist()
    return ids


def altered_model(model: Path, out: Path) -> Path:
    """The same weights plus one extra file: loads fine, but its sha256 differs."""
    shutil.copytree(model, out)
    (out / "NOTICE.txt").write_text("a different model folder\n")
    return out


@pytest.fixture(scope="module")
def full_index(
    tiny_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> EmbedResult:
    out = tmp_path_factory.mktemp("index") / "catalog-index"
    return embed(
        embed_config(
            tiny_data / "products.parquet",
            tiny_model,
            out,
            golden_path=tiny_data / "golden.parquet",
        )
    )


def test_full_build_writes_the_index_layout_and_manifest(
    full_index: EmbedResult, tiny_data: Path, tiny_model: Path
) -> None:
    index = full_index.index_dir
    products = read_catalog(tiny_data / "products.parquet")
    assert sorted(p.name for p in index.iterdir()) == sorted(INDEX_FILES)
    manifest = json.loads((index / MANIFEST_FILE).read_text())
    assert manifest["model_sha256"] == model_sha256(tiny_model) == full_index.model_sha256
    assert (manifest["dim"], manifest["count"], manifest["metric"]) == (32, len(products), "cos")
    assert manifest["ann"]["library"] == "usearch" and manifest["ann"]["connectivity"] == 16
    assert manifest["max_seq_length"] == 64
    assert manifest["mode"] == "full" and manifest["previous_index_sha256"] is None
    counts = {"products": len(products), "encoded": len(products), "reused": 0, "dropped": 0}
    assert manifest["counts"] == counts == full_index.counts
    # Nothing that differs between two runs of the same inputs: no paths, no clock.
    text = (index / MANIFEST_FILE).read_text()
    assert str(index.parent) not in text and str(tiny_data) not in text and "_at" not in text

    vectors = index_vectors(index)
    assert vectors.dtype == np.float32 and vectors.shape == (len(products), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    table = pq.read_table(index / PRODUCTS_FILE)
    assert table.column_names == ["product_id", "content_hash", "product_name", "product_class"]
    assert table.column("product_id").to_pylist() == [p.product_id for p in products]
    assert table.column("content_hash").to_pylist() == [p.content_hash for p in products]
    # This export has no product_name column yet: names read as empty strings.
    assert set(table.column("product_name").to_pylist()) == {""}

    result = full_index.to_dict()
    assert json.loads(json.dumps(result)) == result
    assert result["index_sha256"] == index_sha256(index)
    assert result["products_per_second"] > 0
    assert set(result["checks"]) == {"coverage", "vectors", "model", "encoder", "ann", "canary"}


def test_encode_texts_matches_sentence_transformers_encode(
    tiny_data: Path, tiny_model: Path
) -> None:
    texts = [p.text for p in read_catalog(tiny_data / "products.parquet")][:40]
    model = load_model(tiny_model, CPU)
    ours = encode_texts(model, texts, batch_size=8, runtime=CPU)
    reference = model.encode(texts, batch_size=8, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert encode_texts(model, [], runtime=CPU).shape == (0, 32)


def test_the_same_inputs_give_the_same_index_sha256(
    full_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    config = embed_config(tiny_data / "products.parquet", tiny_model, tmp_path / "again")
    again = embed(config)
    assert again.index_sha256 == full_index.index_sha256
    for name in INDEX_FILES:
        first = (full_index.index_dir / name).read_bytes()
        assert (again.index_dir / name).read_bytes() == first, name

    # Rebuilding into a folder that already holds this index leaves the folder alone.
    before = (again.index_dir / MANIFEST_FILE).stat().st_ino
    assert embed(config).index_sha256 == again.index_sha256
    assert (again.index_dir / MANIFEST_FILE).stat().st_ino == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


def test_incremental_encodes_only_new_and_changed_products(
    full_index: EmbedResult,
    tiny_data: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = product_rows(tiny_data)
    changed = [with_text(row, row["text_to_embed"] + " now in teal") for row in rows[10:12]]
    top = max(row["product_id"] for row in rows)
    added = [
        with_text({**rows[0], "product_id": top + n}, f"teal velvet pouf number {n}")
        for n in (1, 2)
    ]
    kept = rows[:10] + rows[12:-2]
    products = write_products(tmp_path / "products.parquet", kept + changed + added)

    encoded: list[str] = []
    real_encode = embed_module.encode_texts

    def spy(model: Any, texts: Sequence[str], *args: Any, **kwargs: Any) -> Any:
        encoded.extend(texts)
        return real_encode(model, texts, *args, **kwargs)

    monkeypatch.setattr(text_encoder_module, "encode_texts", spy)
    incremental = embed(
        embed_config(
            products, tiny_model, tmp_path / "incremental", previous_index_dir=full_index.index_dir
        )
    )
    assert sorted(encoded) == sorted(r["text_to_embed"] for r in changed + added)
    assert incremental.counts == {
        "products": len(rows),
        "encoded": 4,
        "reused": len(rows) - 4,
        "dropped": 2,
    }
    assert incremental.mode == "incremental"
    assert incremental.previous_index_sha256 == full_index.index_sha256
    manifest = json.loads((incremental.index_dir / MANIFEST_FILE).read_text())
    assert manifest["previous_index_sha256"] == full_index.index_sha256
    # The previous graph was updated: 2 changed + 2 dropped products removed from it.
    assert manifest["ann"]["built"] == "updated"
    assert manifest["ann"]["removed_since_build"] == 4
    assert incremental.checks["ann"]["recall@10"] >= 0.95
    searcher = CatalogSearcher.open(tiny_model, incremental.index_dir, device="cpu")
    for row in changed + added:
        # Each new vector is in the graph: its own text finds it at cosine 1 (among any
        # products whose text is the same once truncated).
        hits = searcher.search(row["text_to_embed"], k=10)
        assert row["product_id"] in [h.product_id for h in hits if h.score > 0.9999]

    monkeypatch.setattr(text_encoder_module, "encode_texts", real_encode)
    full = embed(embed_config(products, tiny_model, tmp_path / "full"))
    assert index_ids(incremental.index_dir) == index_ids(full.index_dir)
    np.testing.assert_allclose(
        index_vectors(incremental.index_dir), index_vectors(full.index_dir), atol=1e-5
    )
    coverage = incremental.checks["coverage"]
    assert coverage["missing"]["count"] == coverage["stale"]["count"] == 0
    assert coverage["files_agree"]


def test_incremental_rebuilds_the_graph_once_removals_pass_the_share(
    full_index: EmbedResult,
    tiny_data: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = product_rows(tiny_data)
    changed = [with_text(row, row["text_to_embed"] + " in oak") for row in rows[:3]]
    products = write_products(tmp_path / "products.parquet", changed + rows[3:])
    previous = full_index.index_dir
    config = embed_config(products, tiny_model, tmp_path / "updated", previous_index_dir=previous)
    updated = json.loads((embed(config).index_dir / MANIFEST_FILE).read_text())
    assert (updated["ann"]["built"], updated["ann"]["removed_since_build"]) == ("updated", 3)

    monkeypatch.setattr(ann_module, "ANN_REBUILD_SHARE", 2 / len(rows))
    rebuilt = embed(
        embed_config(products, tiny_model, tmp_path / "rebuilt", previous_index_dir=previous)
    )
    manifest = json.loads((rebuilt.index_dir / MANIFEST_FILE).read_text())
    assert (manifest["ann"]["built"], manifest["ann"]["removed_since_build"]) == ("full", 0)
    assert rebuilt.checks["coverage"]["files_agree"]
    assert rebuilt.checks["ann"]["recall@10"] >= 0.95


def test_bf16_precision_is_recorded_kept_by_refreshes_and_never_mixed(
    full_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    products = tiny_data / "products.parquet"
    bf16 = embed(embed_config(products, tiny_model, tmp_path / "bf16", precision="bf16"))
    manifest = json.loads((bf16.index_dir / MANIFEST_FILE).read_text())
    fp32_manifest = json.loads((full_index.index_dir / MANIFEST_FILE).read_text())
    assert (manifest["precision"], fp32_manifest["precision"]) == ("bf16", "fp32")
    vectors, fp32 = index_vectors(bf16.index_dir), index_vectors(full_index.index_dir)
    assert np.sum(vectors * fp32, axis=1).min() > 0.99  # close to fp32 ...
    assert not np.array_equal(vectors, fp32)  # ... but computed in bf16

    rows = product_rows(tiny_data)
    changed = [with_text(rows[0], rows[0]["text_to_embed"] + " in walnut")]
    edited = write_products(tmp_path / "edited.parquet", changed + rows[1:])
    refreshed = embed(
        embed_config(
            edited,
            tiny_model,
            tmp_path / "refresh",
            previous_index_dir=bf16.index_dir,
            precision="auto",
        )
    )
    assert json.loads((refreshed.index_dir / MANIFEST_FILE).read_text())["precision"] == "bf16"
    assert refreshed.counts["encoded"] == 1
    with pytest.raises(EmbedError, match="encoded in bf16, this run asks for fp32"):
        embed(
            embed_config(edited, tiny_model, tmp_path / "mixed", previous_index_dir=bf16.index_dir)
        )
    assert not (tmp_path / "mixed").exists()


def test_incremental_from_another_models_index_is_refused(
    full_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    other = altered_model(tiny_model, tmp_path / "other-model")
    config = embed_config(
        tiny_data / "products.parquet",
        other,
        tmp_path / "out",
        previous_index_dir=full_index.index_dir,
    )
    with pytest.raises(EmbedError, match=r"built with model sha256 \w+, this run uses"):
        embed(config)
    assert not (tmp_path / "out").exists()
    with pytest.raises(EmbedError, match="max_seq_length 64, this run uses 16"):
        embed(
            embed_config(
                tiny_data / "products.parquet",
                tiny_model,
                tmp_path / "out",
                previous_index_dir=full_index.index_dir,
                max_seq_length=16,
            )
        )


def test_check_index_finds_stale_missing_and_changed_products(
    full_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    rows = product_rows(tiny_data)
    removed, changed = rows[3], rows[5]
    new = with_text({**rows[0], "product_id": 10**9}, "brand new lamp")
    edited = [r for r in rows if r is not removed and r is not changed]
    edited += [with_text(changed, "a rewritten description"), new]
    products = write_products(tmp_path / "products.parquet", edited)

    checks = check_index(full_index.index_dir, products, tiny_model, sample_size=50, k=5)
    coverage = checks["coverage"]
    assert coverage["active"] == len(rows) and coverage["indexed"] == len(rows)
    assert coverage["stale"] == {"count": 1, "ids": [removed["product_id"]]}
    assert coverage["missing"] == {"count": 1, "ids": [10**9]}
    assert coverage["hash_mismatch"] == {"count": 1, "ids": [changed["product_id"]]}
    assert coverage["duplicates"] == {"count": 0, "ids": []}
    assert coverage["files_agree"]
    assert checks["vectors"]["dim"] == checks["vectors"]["expected_dim"] == 32
    assert checks["vectors"]["non_finite"] == 0
    assert 0.999 < checks["vectors"]["norm_min"] <= checks["vectors"]["norm_max"] < 1.001
    assert checks["model"]["matches"]
    assert checks["ann"]["sample_size"] == 50 and checks["canary"] is None


def test_check_index_detects_a_model_mismatch(
    full_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    other = altered_model(tiny_model, tmp_path / "other-model")
    checks = check_index(full_index.index_dir, tiny_data / "products.parquet", other, k=5)
    assert checks["model"] == {
        "manifest_sha256": full_index.model_sha256,
        "actual_sha256": model_sha256(other),
        "matches": False,
    }


def test_ann_recall_and_canaries_on_tiny_data(full_index: EmbedResult) -> None:
    ann = full_index.checks["ann"]
    assert ann["k"] == 10 and ann["sample_size"] == full_index.counts["products"]
    assert ann["recall@10"] >= 0.95
    canary = full_index.checks["canary"]
    assert canary["queries"] > 0 and 0 <= canary["hits"] <= canary["queries"]
    assert canary["hit_rate"] == pytest.approx(canary["hits"] / canary["queries"], abs=1e-6)
    for miss in canary["misses"]:
        assert miss["query"] and len(miss["top"]) == 5


def unit_vectors(texts: Sequence[str], dim: int = 32) -> npt.NDArray[np.float32]:
    """Random unit vectors, one per text and seeded by it: harder for HNSW than a catalog."""
    rows = [
        np.random.default_rng(list(hashlib.sha256(text.encode()).digest())).standard_normal(dim)
        for text in texts
    ]
    matrix = np.asarray(rows, dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


@pytest.fixture(scope="module")
def random_index(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[EmbedResult, Path]:
    """3,000 products whose vectors are random: the tiny model's embeddings are too alike
    to tell a working ANN index from a broken one."""
    folder = tmp_path_factory.mktemp("random")
    rows = [
        {
            "product_id": 7 * i,
            "text_to_embed": f"item {i}",
            "product_class": "c",
            "content_hash": f"h{i}",
        }
        for i in range(3000)
    ]
    products = write_products(folder / "products.parquet", rows)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            text_encoder_module, "encode_texts", lambda _m, texts, *_a, **_k: unit_vectors(texts)
        )
        result = embed(embed_config(products, tiny_model, folder / "index", ann_sample_size=300))
    return result, products


def test_ann_recall_measures_the_ann_index(
    random_index: tuple[EmbedResult, Path], tiny_model: Path, tmp_path: Path
) -> None:
    from usearch.index import Index

    result, products = random_index
    assert result.checks["ann"]["sample_size"] == 300
    assert result.checks["ann"]["recall@10"] >= 0.95

    # The same vectors under shuffled keys: every file still agrees on the id set, but
    # the ANN index answers with the wrong products, and recall shows it.
    broken = tmp_path / "broken"
    shutil.copytree(result.index_dir, broken)
    ids = np.array(index_ids(broken), dtype=np.uint64)
    scrambled = Index(ndim=32, metric="cos", dtype="f32")
    scrambled.add(np.random.default_rng(0).permutation(ids), index_vectors(broken), threads=1)
    scrambled.save(str(broken / "ann.usearch"))
    checks = check_index(broken, products, tiny_model, sample_size=300, k=10)
    assert checks["coverage"]["files_agree"]
    assert checks["ann"]["recall@10"] < 0.2


def test_precision_must_be_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        embed_config(tmp_path / "p.parquet", tmp_path, tmp_path / "out", precision="fp16")


def test_embed_config_validates_and_resolves_paths(tmp_path: Path) -> None:
    paths: dict[str, Any] = {"model_dir": "m", "products_path": "p.parquet", "output_dir": "o"}
    config = EmbedConfig(**paths)
    assert (config.batch_size, config.max_seq_length, config.canary_k) == (64, None, 10)
    assert (config.ann_sample_size, config.seed, config.device) == (500, 42, "auto")
    assert config.previous_index_dir is None and config.golden_path is None
    source = tmp_path / "cfg" / "embed.json"
    source.parent.mkdir()
    source.write_text(
        json.dumps(
            {
                "model_dir": "model",
                "products_path": "products.parquet",
                "output_dir": "/abs/index",
                "previous_index_dir": "prev",
                "max_seq_length": 128,
            }
        )
    )
    loaded = load_config(source, EmbedConfig)
    assert loaded.previous_index_dir == source.parent / "prev"
    assert loaded.output_dir == Path("/abs/index") and loaded.golden_path is None
    assert "previous_index_dir (default: None)" in config_help(EmbedConfig)
    bad_values: list[tuple[dict[str, Any], str]] = [
        ({"max_seq_length": 0}, "max_seq_length must be >= 1"),
        ({"canary_k": 0}, "canary_k must be >= 1"),
        ({"golden_path": ""}, "golden_path must be a non-empty path"),
        ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
    ]
    for bad, message in bad_values:
        with pytest.raises(ConfigError, match=message):
            EmbedConfig(**paths, **bad)


def test_cli_embed_end_to_end(
    tiny_data: Path, tiny_model: Path, full_index: EmbedResult, tmp_path: Path
) -> None:
    config = tmp_path / "embed.json"
    config.write_text(
        json.dumps(
            {
                "model_dir": str(tiny_model),
                "products_path": str(tiny_data / "products.parquet"),
                "output_dir": "index",
                "batch_size": 16,
                "device": "cpu",
                "precision": "fp32",  # as full_index, whatever this CPU's auto would be
            }
        )
    )
    result_out = tmp_path / "result" / "embed.json"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "shelfguard_train", "embed"),
            *("--config", str(config), "--result-out", str(result_out)),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == EXIT_OK, done.stderr
    result = json.loads(result_out.read_text())
    assert result == json.loads(done.stdout)
    assert result["index_dir"] == str(tmp_path / "index")
    assert result["index_sha256"] == full_index.index_sha256
    assert result["checks"]["coverage"]["missing"]["count"] == 0


def test_cli_check_index_and_one_line_errors(
    tiny_data: Path,
    tiny_model: Path,
    full_index: EmbedResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = ["--products", str(tiny_data / "products.parquet"), "--model-dir", str(tiny_model)]
    out = tmp_path / "checks.json"
    code = main(
        ["check-index", "--index-dir", str(full_index.index_dir), *args, "--result-out", str(out)]
    )
    assert code == EXIT_OK
    assert json.loads(capsys.readouterr().out) == json.loads(out.read_text())

    assert main(["check-index", "--index-dir", str(tmp_path / "nowhere"), *args]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a readable index folder" in err[0]

    config = tmp_path / "embed.json"
    config.write_text(
        json.dumps(
            {
                "model_dir": str(altered_model(tiny_model, tmp_path / "other")),
                "products_path": str(tiny_data / "products.parquet"),
                "output_dir": str(tmp_path / "index"),
                "previous_index_dir": str(full_index.index_dir),
                "device": "cpu",
            }
        )
    )
    assert main(["embed", "--config", str(config)]) == EXIT_BAD_INPUT
    captured = capsys.readouterr()
    assert captured.out == "" and "Traceback" not in captured.err
    # In-process, the model's loading bar may precede it; the error is one last line.
    assert captured.err.splitlines()[-1].startswith("shelfguard_train embed: previous index")


@pytest.mark.slow
def test_real_model_canaries_find_exact_products(
    generated_inputs: Callable[..., Path], tmp_path: Path
) -> None:
    store = generated_inputs(200, 42)
    result = embed(
        EmbedConfig(
            model_dir=Path(default_base_model()),
            products_path=store / "products.parquet",
            output_dir=tmp_path / "index",
            golden_path=store / "golden.parquet",
            device="cpu",
        )
    )
    assert result.dim == 384 and result.counts["encoded"] == result.counts["products"]
    assert result.checks["ann"]["recall@10"] >= 0.95
    canary = result.checks["canary"]
    assert canary["queries"] > 0 and canary["hit_rate"] > 0, canary

    products = read_catalog(store / "products.parquet")
    target = products[len(products) // 2]
    searcher = CatalogSearcher.open(
        Path(default_base_model()),
        result.index_dir,
        expected_index_sha256=result.index_sha256,
        device="cpu",
    )
    assert searcher.search(target.text, k=3)[0].product_id == target.product_id
