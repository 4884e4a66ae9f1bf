"""The int8 OpenVINO encoder against the torch fp32 encoder, with the real bundled model.

One export of all-MiniLM-L6-v2 calibrated on a generated catalog's texts serves the
module: its vectors must stay close to ``encode_texts`` in fp32, rank the catalog for
the golden queries almost as fp32 does, not depend on the batch a text is in, and come
from an IR whose bytes a second export reproduces.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sentence_transformers import SentenceTransformer

from shelfguard_train.config import default_base_model
from shelfguard_train.data import read_catalog, read_golden
from shelfguard_train.encode import encode_texts
from shelfguard_train.hashing import files_sha256
from shelfguard_train.model import Runtime, load_model, model_sha256
from shelfguard_train.openvino_int8 import (
    IR_FILES,
    METADATA_FILE,
    Int8Encoder,
    Int8Error,
    Int8Export,
    OpenVinoUnavailableError,
    encode_int8,
    export_int8,
    load_int8,
)

PRODUCTS = 300
SEED = 42
CALIBRATION = 100

Vectors = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def catalog_texts(generated_inputs: Callable[..., Path]) -> tuple[list[str], list[str]]:
    """(product texts, distinct golden queries) of a generated store."""
    store = generated_inputs(PRODUCTS, SEED)
    products = [p.text for p in read_catalog(store / "products.parquet")]
    queries = list(dict.fromkeys(j.query for j in read_golden(store)))
    return products, queries


@pytest.fixture(scope="module")
def base_model() -> SentenceTransformer:
    return load_model(Path(default_base_model()), Runtime(device="cpu"))


@pytest.fixture(scope="module")
def export(
    base_model: SentenceTransformer,
    catalog_texts: tuple[list[str], list[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Int8Export:
    return export_int8(
        base_model,
        catalog_texts[0],
        tmp_path_factory.mktemp("int8") / "model",
        calibration_size=CALIBRATION,
        source_model_sha256=model_sha256(Path(default_base_model())),
    )


@pytest.fixture(scope="module")
def encoder(export: Int8Export) -> Int8Encoder:
    return load_int8(export.out_dir)


@pytest.fixture(scope="module")
def fp32_vectors(
    base_model: SentenceTransformer, catalog_texts: tuple[list[str], list[str]]
) -> Vectors:
    return encode_texts(base_model, catalog_texts[0])


@pytest.mark.slow
def test_int8_vectors_are_close_to_fp32(
    encoder: Int8Encoder,
    base_model: SentenceTransformer,
    catalog_texts: tuple[list[str], list[str]],
    fp32_vectors: Vectors,
) -> None:
    texts = catalog_texts[0]
    # The exported tokenizer gives the IR exactly what the model's own preprocessing gives.
    features = base_model.preprocess(texts[:8])
    assert encoder.tokenizer(texts[:8], padding=True, return_tensors="np")[
        "input_ids"
    ].tolist() == (features["input_ids"].tolist())

    vectors = encode_int8(encoder, texts, batch_size=32)
    assert vectors.dtype == np.float32 and vectors.shape == fp32_vectors.shape
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = (vectors * fp32_vectors).sum(axis=1)
    # Seen: mean 0.9961, min 0.9922 (all-MiniLM-L6-v2, 300 generated products, 100
    # calibration texts).
    assert cosines.mean() > 0.99, cosines.mean()
    assert cosines.min() > 0.98, cosines.min()


@pytest.mark.slow
def test_a_second_export_writes_the_same_ir(
    export: Int8Export,
    base_model: SentenceTransformer,
    catalog_texts: tuple[list[str], list[str]],
    tmp_path: Path,
) -> None:
    again = export_int8(
        base_model,
        catalog_texts[0],
        tmp_path / "again",
        calibration_size=CALIBRATION,
        source_model_sha256=export.metadata["source_model_sha256"],
    )
    assert again.ir_sha256 == export.ir_sha256 == files_sha256(export.out_dir, IR_FILES)
    assert (tmp_path / "again" / METADATA_FILE).read_bytes() == (
        export.out_dir / METADATA_FILE
    ).read_bytes()
    metadata = export.metadata
    assert metadata["source_model_sha256"] == model_sha256(Path(default_base_model()))
    assert metadata["pooling_mode"] == "mean" and metadata["dimension"] == 384
    assert metadata["calibration"]["texts"] == CALIBRATION


@pytest.mark.slow
def test_a_vector_does_not_depend_on_its_batch(
    encoder: Int8Encoder, catalog_texts: tuple[list[str], list[str]]
) -> None:
    texts = catalog_texts[0][:48]
    batched = encode_int8(encoder, texts, batch_size=16)
    alone = np.stack([encode_int8(encoder, [text])[0] for text in texts])
    # Bit-identical, not merely close.
    assert np.array_equal(alone, batched)
    # Input order is kept whatever order the batches run in.
    assert np.array_equal(encode_int8(encoder, texts[::-1], batch_size=7)[::-1], batched)
    assert encode_int8(encoder, []).shape == (0, 384)


@pytest.mark.slow
def test_int8_retrieves_what_fp32_retrieves(
    encoder: Int8Encoder,
    base_model: SentenceTransformer,
    catalog_texts: tuple[list[str], list[str]],
    fp32_vectors: Vectors,
) -> None:
    texts, queries = catalog_texts
    queries = queries[:30]
    catalog = encode_int8(encoder, texts)
    top_int8 = _top(encode_int8(encoder, queries), catalog)
    top_fp32 = _top(encode_texts(base_model, queries), fp32_vectors)
    overlaps = [len(set(a) & set(b)) / 10 for a, b in zip(top_int8, top_fp32, strict=True)]
    # Seen: 0.95 (top-1 agrees for 27 of 30 queries).
    assert np.mean(overlaps) > 0.8, overlaps
    # The best product agrees for most queries.
    assert np.mean([a[0] == b[0] for a, b in zip(top_int8, top_fp32, strict=True)]) > 0.8


@pytest.mark.slow
def test_load_refuses_an_ir_whose_bytes_changed(export: Int8Export, tmp_path: Path) -> None:
    copy = shutil.copytree(export.out_dir, tmp_path / "copy")
    with (copy / "model.bin").open("r+b") as handle:
        handle.seek(1024)
        byte = handle.read(1)
        handle.seek(1024)
        handle.write(bytes([byte[0] ^ 1]))
    with pytest.raises(Int8Error, match="sha256"):
        load_int8(copy)


def test_unsupported_pooling_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling

    model = load_model(tiny_model, Runtime(device="cpu"))
    maxed = SentenceTransformer(
        modules=[model[0], Pooling(model.get_embedding_dimension() or 0, pooling_mode="max")],
        device="cpu",
    )
    with pytest.raises(Int8Error, match=r"pooling modes mean, cls.*'max'"):
        export_int8(maxed, ["a chair"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_openvino_names_the_torch_fallback(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "nncf", None)
    model = load_model(tiny_model, Runtime(device="cpu"))
    with pytest.raises(OpenVinoUnavailableError, match="encode_texts"):
        export_int8(model, ["a chair"], tmp_path / "out")
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(OpenVinoUnavailableError, match="openvino"):
        load_int8(tmp_path / "out")


def _top(queries: Vectors, catalog: Vectors, k: int = 10) -> list[list[int]]:
    scores = queries @ catalog.T
    return [list(map(int, row)) for row in np.argsort(-scores, axis=1, kind="stable")[:, :k]]
