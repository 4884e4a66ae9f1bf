"""The index folder's format: its files, its manifest, its sha256, and reading it back.

An index folder holds four files (``INDEX_FILES``, in the order ``index_sha256``
hashes them):

- ``manifest.json``: what the index is (format, model sha256, dimension, count, metric,
  ANN parameters, max_seq_length, precision, counts, previous index sha256). No timestamps and no
  paths: the same inputs give the same bytes, so ``index_sha256`` is reproducible.
- ``products.parquet``: product_id, content_hash, product_name, product_class, in
  product_id order.
- ``vectors.npy``: one float32 row per product, in the same order.
- ``ann.usearch``: a usearch HNSW index (cosine, f32) keyed by product_id. A full
  build inserts every vector; an incremental one loads the previous graph, removes the
  changed and dropped products and inserts the new vectors, until the removals since
  the last full build pass ``ANN_REBUILD_SHARE`` (``shelfguard_train.ann``) of the catalog, when it rebuilds.

An int8 index also holds ``encoder/``, the OpenVINO export its vectors and queries are
encoded with (``shelfguard_train.text_encoder``); the manifest's ``encoder`` records
the sha256 of its files, so ``index_sha256`` binds it through the manifest.

``embed`` writes the folder (``shelfguard_train.embed``); this module names its files,
reads them back and gives the folder its identity.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from shelfguard_train.hashing import files_sha256

__all__ = [
    "ANN_FILE",
    "FORMAT_VERSION",
    "INDEX_FILES",
    "MANIFEST_FILE",
    "PRODUCTS_FILE",
    "VECTORS_FILE",
    "EmbedError",
    "PreviousIndex",
    "index_precision",
    "index_sha256",
    "load_previous",
    "read_index_products",
    "read_manifest",
]

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
PRODUCTS_FILE = "products.parquet"
VECTORS_FILE = "vectors.npy"
ANN_FILE = "ann.usearch"
# The order index_sha256 hashes the files in; part of the format.
INDEX_FILES = (MANIFEST_FILE, PRODUCTS_FILE, VECTORS_FILE, ANN_FILE)


class EmbedError(ValueError):
    """An index cannot be built or read as asked (e.g. a previous index of another model)."""


def index_sha256(index_dir: Path) -> str:
    """sha256 over the index files in ``INDEX_FILES`` order: the index's identity.

    Each file contributes its name, a NUL byte, its size as 8 big-endian bytes and its
    content (``files_sha256``, as ``model_sha256`` does for a model folder).
    """
    for name in INDEX_FILES:
        if not (index_dir / name).is_file():
            raise FileNotFoundError(f"{index_dir}: not an index folder ({name} is missing)")
    return files_sha256(index_dir, INDEX_FILES)


def read_manifest(index_dir: Path) -> dict[str, Any]:
    """The index's ``manifest.json``; ``EmbedError`` when absent, unreadable or foreign."""
    path = index_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise EmbedError(f"{index_dir}: not a readable index folder ({exc})") from exc
    if not isinstance(manifest, dict):
        raise EmbedError(f"{path}: not an index manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise EmbedError(
            f"{path}: unsupported index format {manifest.get('format_version')!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    return manifest


def index_precision(manifest: dict[str, Any]) -> str:
    """The precision an index's vectors were encoded in (fp32 for indexes older than it)."""
    return str(manifest.get("precision", "fp32"))


def read_index_products(index_dir: Path) -> pa.Table:
    """The index's products.parquet (product_id, content_hash, product_name, product_class)."""
    return pq.read_table(index_dir / PRODUCTS_FILE)


@dataclass(frozen=True)
class PreviousIndex:
    """A previous index read back for an incremental run: its rows by product_id, its vectors."""

    index_dir: Path
    sha256: str
    manifest: dict[str, Any]
    rows: dict[int, tuple[int, str]]
    vectors: npt.NDArray[np.float32]


def load_previous(
    index_dir: Path, manifest: dict[str, Any], model_sha: str, max_seq_length: int | None
) -> PreviousIndex:
    if manifest.get("model_sha256") != model_sha:
        raise EmbedError(
            f"previous index {index_dir} was built with model sha256 "
            f"{manifest.get('model_sha256')}, this run uses {model_sha}: its vectors cannot "
            "be reused; build a full index (no previous_index_dir)"
        )
    if manifest.get("max_seq_length") != max_seq_length:
        raise EmbedError(
            f"previous index {index_dir} was built with max_seq_length "
            f"{manifest.get('max_seq_length')}, this run uses {max_seq_length}: its vectors "
            "cannot be reused; build a full index (no previous_index_dir)"
        )
    sha = index_sha256(index_dir)
    table = read_index_products(index_dir)
    vectors = np.load(index_dir / VECTORS_FILE, mmap_mode="r")
    if vectors.shape[0] != table.num_rows:
        raise EmbedError(
            f"previous index {index_dir} is inconsistent: {vectors.shape[0]} vectors for "
            f"{table.num_rows} products"
        )
    rows = {
        product_id: (row, content_hash)
        for row, (product_id, content_hash) in enumerate(
            zip(
                table.column("product_id").to_pylist(),
                table.column("content_hash").to_pylist(),
                strict=True,
            )
        )
    }
    return PreviousIndex(
        index_dir=index_dir, sha256=sha, manifest=manifest, rows=rows, vectors=vectors
    )
