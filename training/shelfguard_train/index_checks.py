"""Checking an index before it is served: coverage, vectors, model binding, ANN recall, canaries.

``check_index`` measures and reports; it decides nothing. The orchestration side's
index gate applies the policy's thresholds to the measurements.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shelfguard_train.ann import ann_search, open_ann
from shelfguard_train.data import _GOLDEN_COLUMNS, CatalogProduct, _read, read_catalog
from shelfguard_train.evaluate import EXACT
from shelfguard_train.index_format import (
    VECTORS_FILE,
    EmbedError,
    read_index_products,
    read_manifest,
)
from shelfguard_train.model import model_sha256
from shelfguard_train.text_encoder import (
    TextEncoder,
    encoder_check,
    open_encoder,
    open_index_encoder,
)

if TYPE_CHECKING:
    from usearch.index import Index

__all__ = ["check_index"]

log = logging.getLogger(__name__)

_REPORTED_IDS = 20
_REPORTED_MISSES = 5
_EXACT_CHUNK_CELLS = 1 << 24


def check_index(
    index_dir: Path,
    products_path: Path,
    model_dir: Path,
    golden_path: Path | None = None,
    sample_size: int = 500,
    k: int = 10,
    seed: int = 42,
    *,
    encoder: TextEncoder | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Measure an index against the active catalog, its model and the golden set.

    Returns plain data, no verdict (the index gate applies the policy's thresholds):

    - ``coverage``: active and indexed counts; ``missing`` (active products without a
      vector), ``stale`` (vectors of products no longer active), ``duplicates`` (ids
      indexed more than once) and ``hash_mismatch`` (indexed content_hash differs from
      the catalog's), each as ``{"count", "ids"}`` with the first 20 ids; and whether
      vectors.npy and the ANN index hold exactly the indexed products.
    - ``vectors``: dimension, the model's dimension, min/max L2 norm and the number of
      vectors with a non-finite value.
    - ``model``: the manifest's model sha256, ``model_dir``'s now, and whether they match.
    - ``encoder``: backend and precision; for an int8 index, the sha256 of its encoder's
      files as recorded and as found, the model it was exported from, and whether they
      match (``shelfguard_train.text_encoder.encoder_check``).
    - ``ann``: ``recall@k`` of the ANN search against exact search, over a seeded sample
      of ``sample_size`` indexed vectors used as queries.
    - ``canary``: golden queries with an indexed Exact product, how many find one in the
      ANN top k, and a few misses (None without ``golden_path``).

    ``encoder`` is the index's encoder already open (``embed`` passes its own); the
    canaries are encoded with it, as the index's search encodes queries.
    """
    if not model_dir.is_dir():
        raise EmbedError(f"model folder not found: {model_dir}")
    manifest = read_manifest(index_dir)
    catalog = read_catalog(products_path)
    table = read_index_products(index_dir)
    vectors = np.load(index_dir / VECTORS_FILE, mmap_mode="r")
    ann = open_ann(index_dir, manifest)
    ids = np.asarray(table.column("product_id").to_numpy(), dtype=np.int64)
    actual_sha = model_sha256(model_dir)
    encoder_found = encoder_check(index_dir, manifest)
    unusable = None
    if encoder is None:
        try:
            encoder = open_index_encoder(index_dir, model_dir, manifest, found=encoder_found)
        except EmbedError as exc:
            # Measured and reported like the rest; the canaries fall back to the model alone.
            unusable = str(exc)
            encoder_found["error"] = unusable
            encoder_found["matches"] = False
            encoder = open_encoder(model_dir, "fp32", max_seq_length=manifest.get("max_seq_length"))
    expected_dim = encoder.dimension
    checks: dict[str, Any] = {
        "coverage": _coverage(catalog, table, vectors, ann),
        "vectors": _vector_stats(vectors, expected_dim),
        "model": {
            "manifest_sha256": manifest.get("model_sha256"),
            "actual_sha256": actual_sha,
            "matches": manifest.get("model_sha256") == actual_sha,
        },
        "encoder": encoder_found,
        "ann": _ann_recall(ann, ids, vectors, sample_size, k, seed),
        "canary": None,
    }
    if golden_path is not None:
        if expected_dim != vectors.shape[1]:
            mismatch = f"model dimension {expected_dim} != index dimension {vectors.shape[1]}"
            checks["canary"] = {"skipped": mismatch}
        elif unusable is not None:
            checks["canary"] = {"skipped": f"the index's encoder cannot be used: {unusable}"}
        else:
            checks["canary"] = _canary(golden_path, set(ids.tolist()), ann, encoder, k, batch_size)
    _log_checks(index_dir, checks, k)
    return checks


def _id_sample(ids: Sequence[int]) -> dict[str, Any]:
    return {"count": len(ids), "ids": sorted(ids)[:_REPORTED_IDS]}


def _coverage(
    catalog: Sequence[CatalogProduct], table: pa.Table, vectors: npt.NDArray[Any], ann: Index
) -> dict[str, Any]:
    indexed_ids = table.column("product_id").to_pylist()
    indexed_hashes = table.column("content_hash").to_pylist()
    seen: dict[int, int] = defaultdict(int)
    for product_id in indexed_ids:
        seen[product_id] += 1
    hashes = dict(zip(indexed_ids, indexed_hashes, strict=True))
    active = {p.product_id: p.content_hash for p in catalog}
    ann_keys = set(np.asarray(ann.keys, dtype=np.int64).tolist())
    return {
        "active": len(active),
        "indexed": len(indexed_ids),
        "missing": _id_sample([pid for pid in active if pid not in seen]),
        "stale": _id_sample([pid for pid in seen if pid not in active]),
        "duplicates": _id_sample([pid for pid, n in seen.items() if n > 1]),
        "hash_mismatch": _id_sample(
            [pid for pid, h in active.items() if pid in hashes and hashes[pid] != h]
        ),
        "vector_rows": int(vectors.shape[0]),
        "ann_count": len(ann),
        "files_agree": int(vectors.shape[0]) == len(indexed_ids) == len(ann)
        and ann_keys == set(seen),
    }


def _vector_stats(vectors: npt.NDArray[Any], expected_dim: int) -> dict[str, Any]:
    non_finite = 0
    norms: list[npt.NDArray[np.float32]] = []
    chunk = max(1, _EXACT_CHUNK_CELLS // max(vectors.shape[1], 1))
    # In chunks: vectors.npy is memory-mapped and may be larger than memory.
    for start in range(0, vectors.shape[0], chunk):
        block = np.asarray(vectors[start : start + chunk], dtype=np.float32)
        finite = np.isfinite(block).all(axis=1)
        non_finite += int((~finite).sum())
        norms.append(np.linalg.norm(block[finite], axis=1))
    joined = np.concatenate(norms) if norms else np.empty(0, dtype=np.float32)
    return {
        "dim": int(vectors.shape[1]),
        "expected_dim": expected_dim,
        "norm_min": float(joined.min()) if joined.size else None,
        "norm_max": float(joined.max()) if joined.size else None,
        "non_finite": non_finite,
    }


def _ann_recall(
    ann: Index,
    ids: npt.NDArray[np.int64],
    vectors: npt.NDArray[Any],
    sample_size: int,
    k: int,
    seed: int,
) -> dict[str, Any]:
    count = len(ids)
    depth = min(k, count)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(count, size=min(sample_size, count), replace=False))
    queries = np.asarray(vectors[sample], dtype=np.float32)
    matrix = np.asarray(vectors, dtype=np.float32)
    row_of = {pid: row for row, pid in enumerate(ids.tolist())}
    results = ann_search(ann, queries, depth)
    found = 0
    chunk = max(1, _EXACT_CHUNK_CELLS // max(count, 1))
    for start in range(0, len(queries), chunk):
        scores = queries[start : start + chunk] @ matrix.T
        # The k-th best exact score per query: an ANN result scoring at least that is a
        # true top-k neighbour, which counts ties (identical texts) fairly either way.
        kth = np.partition(scores, count - depth, axis=1)[:, count - depth]
        for offset, row_scores in enumerate(scores):
            q = start + offset
            rows = [row_of[pid] for pid, _ in results[q] if pid in row_of]
            found += int((row_scores[rows] >= kth[offset] - 1e-6).sum())
    total = len(queries) * depth
    return {
        "k": k,
        f"recall@{k}": round(found / total, 6) if total else None,
        "sample_size": len(queries),
    }


def _read_canaries(golden_path: Path, indexed: set[int]) -> list[tuple[int, str, set[int]]]:
    columns = _read(golden_path, _GOLDEN_COLUMNS)
    texts: dict[int, str] = {}
    exact: dict[int, set[int]] = defaultdict(set)
    for query_id, query, product_id, grade in zip(
        columns["query_id"], columns["query"], columns["product_id"], columns["grade"], strict=True
    ):
        texts[query_id] = query
        if grade >= EXACT and product_id in indexed:
            exact[query_id].add(product_id)
    return [(q, texts[q], exact[q]) for q in sorted(exact)]


def _canary(
    golden_path: Path,
    indexed: set[int],
    ann: Index,
    encoder: TextEncoder,
    k: int,
    batch_size: int,
) -> dict[str, Any]:
    canaries = _read_canaries(golden_path, indexed)
    if not canaries:
        return {"k": k, "queries": 0, "hits": 0, "hit_rate": None, "misses": []}
    queries = encoder.encode([text for _, text, _ in canaries], batch_size)
    results = ann_search(ann, queries, k)
    hits = 0
    misses: list[dict[str, Any]] = []
    for (query_id, text, exact), found in zip(canaries, results, strict=True):
        top = [pid for pid, _ in found]
        if exact.intersection(top):
            hits += 1
        elif len(misses) < _REPORTED_MISSES:
            misses.append(
                {"query_id": query_id, "query": text, "exact": sorted(exact)[:5], "top": top[:5]}
            )
    return {
        "k": k,
        "queries": len(canaries),
        "hits": hits,
        "hit_rate": round(hits / len(canaries), 6),
        "misses": misses,
    }


def _log_checks(index_dir: Path, checks: dict[str, Any], k: int) -> None:
    coverage = checks["coverage"]
    canary = checks["canary"] or {}
    log.info(
        "checked %s: %d active, %d indexed, %d missing, %d stale, model matches %s, "
        "ANN recall@%d %s, canary hit rate %s",
        index_dir,
        coverage["active"],
        coverage["indexed"],
        coverage["missing"]["count"],
        coverage["stale"]["count"],
        checks["model"]["matches"],
        k,
        checks["ann"][f"recall@{k}"],
        canary.get("hit_rate"),
    )
