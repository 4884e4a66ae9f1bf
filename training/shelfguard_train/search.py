"""Searching the catalog index with the model it was built with, and nothing else.

``CatalogSearcher.open`` binds a model folder to an index folder: it refuses a model
whose bytes differ from the one the index manifest names (its vectors would live in
another embedding space, and every result would be silently wrong), and, when the
caller knows what was approved, an index or model other than the approved ones.
Queries are encoded by the index's own encoder (``shelfguard_train.text_encoder``):
the model at the index's precision, or the int8 export kept in an int8 index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shelfguard_train.ann import ann_search, open_ann
from shelfguard_train.index_format import (
    EmbedError,
    index_sha256,
    read_index_products,
    read_manifest,
)
from shelfguard_train.model import model_sha256
from shelfguard_train.text_encoder import TextEncoder, open_index_encoder

if TYPE_CHECKING:
    from usearch.index import Index

__all__ = ["CatalogSearcher", "Hit", "IndexMismatchError"]


class IndexMismatchError(RuntimeError):
    """The model, the index or both are not the ones expected: searching would mislead."""


@dataclass(frozen=True)
class Hit:
    """One search result: its rank (1 = best), the product and its cosine similarity."""

    rank: int
    product_id: int
    score: float
    product_name: str
    product_class: str


@dataclass(frozen=True)
class _Product:
    name: str
    product_class: str


class CatalogSearcher:
    """Top-k product search over an index folder with its own model; use ``open``."""

    def __init__(
        self,
        encoder: TextEncoder,
        ann: Index,
        products: dict[int, _Product],
        manifest: dict[str, Any],
    ) -> None:
        self.encoder = encoder
        self.ann = ann
        self.products = products
        self.manifest = manifest

    @classmethod
    def open(
        cls,
        model_dir: Path,
        index_dir: Path,
        *,
        expected_model_sha256: str | None = None,
        expected_index_sha256: str | None = None,
        device: str = "auto",
    ) -> CatalogSearcher:
        """Load the model and the index after checking that they belong together.

        Raises ``IndexMismatchError`` (naming both hashes) when ``model_dir``'s sha256
        differs from the one in the index manifest, or from ``expected_model_sha256``,
        or when the index's sha256 differs from ``expected_index_sha256``.
        """
        model_dir, index_dir = Path(model_dir), Path(index_dir)
        manifest = read_manifest(index_dir)
        actual_model = model_sha256(model_dir)
        if manifest.get("model_sha256") != actual_model:
            raise IndexMismatchError(
                f"index {index_dir} was built with model sha256 {manifest.get('model_sha256')}"
                f" but {model_dir} has sha256 {actual_model}"
            )
        if expected_model_sha256 is not None and expected_model_sha256 != actual_model:
            raise IndexMismatchError(
                f"expected model sha256 {expected_model_sha256} but {model_dir} has sha256 "
                f"{actual_model}"
            )
        if expected_index_sha256 is not None:
            actual_index = index_sha256(index_dir)
            if expected_index_sha256 != actual_index:
                raise IndexMismatchError(
                    f"expected index sha256 {expected_index_sha256} but {index_dir} has sha256 "
                    f"{actual_index}"
                )
        # Queries are encoded by the encoder the index's vectors were (an int8 index's own).
        try:
            encoder = open_index_encoder(
                index_dir, model_dir, manifest, device=device, source_sha256=actual_model
            )
        except EmbedError as exc:
            raise IndexMismatchError(str(exc)) from exc
        table = read_index_products(index_dir)
        products = {
            product_id: _Product(name=name, product_class=product_class)
            for product_id, name, product_class in zip(
                table.column("product_id").to_pylist(),
                table.column("product_name").to_pylist(),
                table.column("product_class").to_pylist(),
                strict=True,
            )
        }
        return cls(encoder, open_ann(index_dir, manifest), products, manifest)

    def search(self, query: str, k: int = 10) -> list[Hit]:
        """The ``k`` products nearest to ``query``, best first (fewer if the index is small)."""
        return self.search_many([query], k)[0]

    def search_many(self, queries: list[str], k: int = 10) -> list[list[Hit]]:
        """:meth:`search` for several queries at once: one encoder call, one ANN call.

        A service answering concurrent requests batches them through here; the answers
        are the ones :meth:`search` gives each query alone.
        """
        if any(not query.strip() for query in queries):
            raise ValueError("empty query")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not queries:
            return []
        # Unpadded batches: a query's vector, and so its answer, is the same alone or batched.
        vectors = self.encoder.encode(queries, len(queries), equal_lengths=True)
        answers = []
        # usearch reports cosine distance: 1 - similarity.
        for found in ann_search(self.ann, vectors, k):
            hits = []
            for rank, (product_id, distance) in enumerate(found, 1):
                product = self.products[product_id]
                hits.append(
                    Hit(
                        rank=rank,
                        product_id=product_id,
                        score=1.0 - distance,
                        product_name=product.name,
                        product_class=product.product_class,
                    )
                )
            answers.append(hits)
        return answers
