"""An int8 index end to end: built, checked, refreshed, searched and evaluated with the
same OpenVINO encoder, refused across precisions, and falling back to torch (saying so)
where openvino cannot be imported."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from shelfguard_train.config import EvalConfig
from shelfguard_train.embed import (
    MANIFEST_FILE,
    EmbedError,
    EmbedResult,
    check_index,
    embed,
)
from shelfguard_train.evaluate import evaluate
from shelfguard_train.model import model_sha256
from shelfguard_train.search import CatalogSearcher, IndexMismatchError
from shelfguard_train.text_encoder import ENCODER_DIR, encoder_files_sha256
from tests.training.test_embed import (
    embed_config,
    index_vectors,
    product_rows,
    with_text,
    write_products,
)


@pytest.fixture(scope="module")
def int8_index(
    tiny_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> EmbedResult:
    out = tmp_path_factory.mktemp("int8") / "catalog-index"
    return embed(
        embed_config(
            tiny_data / "products.parquet",
            tiny_model,
            out,
            golden_path=tiny_data / "golden.parquet",
            precision="int8",
        )
    )


@pytest.fixture(scope="module")
def fp32_index(
    tiny_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> EmbedResult:
    out = tmp_path_factory.mktemp("fp32") / "catalog-index"
    return embed(embed_config(tiny_data / "products.parquet", tiny_model, out))


def manifest_of(index_dir: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((index_dir / MANIFEST_FILE).read_text())
    return manifest


def test_an_int8_index_records_its_encoder_and_passes_its_checks(
    int8_index: EmbedResult, tiny_model: Path
) -> None:
    manifest = manifest_of(int8_index.index_dir)
    encoder = manifest["encoder"]
    assert (manifest["precision"], encoder["backend"], encoder["fallback"]) == (
        "int8",
        "openvino",
        None,
    )
    # The export is its own artifact, bound to the model it came from.
    assert encoder["source_model_sha256"] == model_sha256(tiny_model)
    assert encoder["files_sha256"] == encoder_files_sha256(int8_index.index_dir / ENCODER_DIR)
    found = int8_index.checks["encoder"]
    assert found["matches"] is True
    assert found["actual_sha256"] == encoder["files_sha256"]
    assert int8_index.checks["canary"]["queries"] > 0
    norms = np.linalg.norm(index_vectors(int8_index.index_dir), axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5)


def test_search_and_the_index_gate_encode_queries_with_the_index_encoder(
    int8_index: EmbedResult, tiny_data: Path, tiny_model: Path
) -> None:
    searcher = CatalogSearcher.open(tiny_model, int8_index.index_dir, device="cpu")
    assert (searcher.encoder.precision, searcher.encoder.backend) == ("int8", "openvino")
    rows = pq.read_table(tiny_data / "products.parquet").to_pylist()
    vectors = index_vectors(int8_index.index_dir)
    # A product's text as a query gets the very vector the index holds for it (the same
    # encoder, batch-independent), and finds it with similarity 1.
    for row_number in (0, 7, 42):
        text = rows[row_number]["text_to_embed"]
        assert np.array_equal(searcher.encoder.encode([text])[0], vectors[row_number])
        hits = searcher.search(text, k=10)
        assert rows[row_number]["product_id"] in [hit.product_id for hit in hits]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    checks = check_index(
        int8_index.index_dir,
        tiny_data / "products.parquet",
        tiny_model,
        tiny_data / "golden.parquet",
    )
    assert checks["encoder"]["matches"] is True
    assert checks["canary"] == int8_index.checks["canary"]


def test_a_query_gets_the_same_hits_alone_and_in_a_padded_batch(
    int8_index: EmbedResult,
    fp32_index: EmbedResult,
    tiny_model: Path,
) -> None:
    queries = ["velvet", "grey velvet sofa with oak legs and two cushions", "rug", "oak desk"]
    for index_dir in (int8_index.index_dir, fp32_index.index_dir):
        searcher = CatalogSearcher.open(tiny_model, index_dir, device="cpu")
        batched = searcher.search_many(queries, k=10)
        for query, hits in zip(queries, batched, strict=True):
            assert searcher.search(query, k=10) == hits, query


def test_a_tampered_encoder_is_reported_and_refused_by_search(
    int8_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "index"
    shutil.copytree(int8_index.index_dir, copy)
    config = copy / ENCODER_DIR / "int8.json"
    metadata = json.loads(config.read_text())
    metadata["pooling_mode"] = "cls"
    config.write_text(json.dumps(metadata))
    checks = check_index(
        copy, tiny_data / "products.parquet", tiny_model, tiny_data / "golden.parquet"
    )
    assert checks["encoder"]["matches"] is False
    assert "hash to" in checks["encoder"]["error"]
    assert "cannot be used" in checks["canary"]["skipped"]
    with pytest.raises(IndexMismatchError, match="int8 encoder's files hash to"):
        CatalogSearcher.open(tiny_model, copy, device="cpu")


def test_an_incremental_int8_refresh_reuses_the_encoder_and_matches_a_full_build(
    int8_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    rows = product_rows(tiny_data)
    edited = write_products(
        tmp_path / "edited.parquet",
        [with_text(rows[0], rows[0]["text_to_embed"] + " in walnut"), *rows[1:]],
    )
    refreshed = embed(
        embed_config(
            edited,
            tiny_model,
            tmp_path / "refresh",
            previous_index_dir=int8_index.index_dir,
            precision="auto",
        )
    )
    assert refreshed.counts["encoded"] == 1
    previous, now = manifest_of(int8_index.index_dir), manifest_of(refreshed.index_dir)
    assert now["precision"] == "int8"
    assert now["encoder"]["files_sha256"] == previous["encoder"]["files_sha256"]
    # The changed product's new vector is what the previous index's encoder gives it.
    searcher = CatalogSearcher.open(tiny_model, int8_index.index_dir, device="cpu")
    text = rows[0]["text_to_embed"] + " in walnut"
    assert np.array_equal(index_vectors(refreshed.index_dir)[0], searcher.encoder.encode([text])[0])


@pytest.mark.parametrize(("previous", "asked"), [("fp32", "int8"), ("int8", "fp32")])
def test_an_incremental_refresh_across_precisions_is_refused(
    int8_index: EmbedResult,
    fp32_index: EmbedResult,
    tiny_data: Path,
    tiny_model: Path,
    tmp_path: Path,
    previous: str,
    asked: str,
) -> None:
    previous_dir = int8_index.index_dir if previous == "int8" else fp32_index.index_dir
    with pytest.raises(EmbedError, match=f"encoded in {previous}, this run asks for {asked}"):
        embed(
            embed_config(
                tiny_data / "products.parquet",
                tiny_model,
                tmp_path / "mixed",
                previous_index_dir=previous_dir,
                precision=asked,
            )
        )
    assert not (tmp_path / "mixed").exists()


def test_the_evaluation_exports_the_same_encoder_as_the_index(
    int8_index: EmbedResult, tiny_data: Path, tiny_model: Path, tmp_path: Path
) -> None:
    report = evaluate(
        EvalConfig(
            data_dir=tiny_data,
            output_path=tmp_path / "evaluation.json",
            models={"challenger": tiny_model},
            include_bm25=False,
            device="cpu",
            precision="int8",
        )
    ).to_dict()
    assert report["inputs"]["precision"] == "int8"
    encoder = report["models"]["challenger"]["encoder"]
    index_encoder = manifest_of(int8_index.index_dir)["encoder"]
    # Same model, same catalog texts: the same bytes, so the gate judged what serves.
    assert encoder["sha256"] == index_encoder["sha256"]
    assert encoder["files_sha256"] == index_encoder["files_sha256"]


def test_int8_falls_back_to_torch_where_openvino_cannot_be_imported(
    int8_index: EmbedResult,
    tiny_data: Path,
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import openvino` raise ImportError, as on an image without it.
    monkeypatch.setitem(sys.modules, "openvino", None)
    result = embed(
        embed_config(
            tiny_data / "products.parquet", tiny_model, tmp_path / "index", precision="int8"
        )
    )
    manifest = manifest_of(result.index_dir)
    # Falls back to what "auto" picks here: bf16 or fp32 under torch.
    assert manifest["precision"] in ("bf16", "fp32")
    assert manifest["encoder"]["backend"] == "torch"
    assert "openvino" in manifest["encoder"]["fallback"]
    assert not (result.index_dir / ENCODER_DIR).exists()
    # An int8 index cannot fall back: its vectors admit no other encoder.
    with pytest.raises(EmbedError, match="encoded in int8, which cannot run here"):
        embed(
            embed_config(
                tiny_data / "products.parquet",
                tiny_model,
                tmp_path / "refresh",
                previous_index_dir=int8_index.index_dir,
                precision="auto",
            )
        )
