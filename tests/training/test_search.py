"""CatalogSearcher: ranked hits, and refusing a model or index other than the expected ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shelfguard_train.config import EmbedConfig
from shelfguard_train.embed import EmbedResult, embed
from shelfguard_train.model import model_sha256
from shelfguard_train.search import CatalogSearcher, IndexMismatchError


@pytest.fixture(scope="module")
def named_index(
    tiny_data: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> EmbedResult:
    """An index of the tiny catalog with product names (as the newer export has them)."""
    folder = tmp_path_factory.mktemp("named")
    rows = [
        {**row, "product_name": f"product {row['product_id']}"}
        for row in pq.read_table(tiny_data / "products.parquet").to_pylist()
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "products.parquet")
    return embed(
        EmbedConfig(
            model_dir=tiny_model,
            products_path=folder / "products.parquet",
            output_dir=folder / "index",
            batch_size=16,
            device="cpu",
        )
    )


@pytest.fixture(scope="module")
def searcher(named_index: EmbedResult, tiny_model: Path) -> CatalogSearcher:
    return CatalogSearcher.open(
        tiny_model,
        named_index.index_dir,
        expected_model_sha256=named_index.model_sha256,
        expected_index_sha256=named_index.index_sha256,
        device="cpu",
    )


def test_hits_are_the_nearest_products_best_first(
    searcher: CatalogSearcher, named_index: EmbedResult, tiny_data: Path
) -> None:
    rows = pq.read_table(tiny_data / "products.parquet").to_pylist()
    classes = {row["product_id"]: row["product_class"] for row in rows}
    query = rows[7]["text_to_embed"]
    hits = searcher.search(query, k=5)
    assert [hit.rank for hit in hits] == [1, 2, 3, 4, 5]
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True)
    # Against exact search over the index's vectors (the tiny random model scores many
    # products alike, so a hit must be as near as the fifth best, not a given product).
    index = named_index.index_dir
    ids = pq.read_table(index / "products.parquet").column("product_id").to_pylist()
    exact = np.load(index / "vectors.npy") @ searcher.encoder.encode([query])[0]
    fifth = np.sort(exact)[-5]
    for hit in hits:
        row = ids.index(hit.product_id)
        assert hit.score == pytest.approx(float(exact[row]), abs=1e-5)
        assert exact[row] >= fifth - 1e-5
        assert hit.product_name == f"product {hit.product_id}"
        assert hit.product_class == classes[hit.product_id]
    assert len(searcher.search("sofa", k=1000)) == len(rows)


@pytest.mark.parametrize(("query", "k"), [("", 10), ("   \t", 10), ("sofa", 0)])
def test_bad_queries_are_refused(searcher: CatalogSearcher, query: str, k: int) -> None:
    with pytest.raises(ValueError, match="empty query" if not query.strip() else "k must be"):
        searcher.search(query, k)


def test_a_model_other_than_the_indexed_one_is_refused(
    named_index: EmbedResult, tiny_model: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    (other / "NOTICE.txt").write_text("not the indexed model\n")
    with pytest.raises(IndexMismatchError) as excinfo:
        CatalogSearcher.open(other, named_index.index_dir, device="cpu")
    message = str(excinfo.value)
    assert named_index.model_sha256 in message and model_sha256(other) in message


def test_unexpected_hashes_are_refused(named_index: EmbedResult, tiny_model: Path) -> None:
    with pytest.raises(IndexMismatchError, match=f"expected index sha256 {'0' * 64} but"):
        CatalogSearcher.open(
            tiny_model, named_index.index_dir, expected_index_sha256="0" * 64, device="cpu"
        )
    with pytest.raises(IndexMismatchError, match=named_index.model_sha256):
        CatalogSearcher.open(
            tiny_model, named_index.index_dir, expected_model_sha256="f" * 64, device="cpu"
        )
