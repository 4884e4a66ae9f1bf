"""The ANN graph: usearch HNSW parameters, building or updating the graph, and searching it.

A full build inserts every vector into a new graph; an incremental run updates the
previous index's graph in place (``plan_ann`` decides which, ``ann_graph`` carries it
out). ``open_ann`` loads a saved graph with the parameters its manifest records, and
``ann_search`` queries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from shelfguard_train.data import CatalogProduct
from shelfguard_train.index_format import ANN_FILE, PreviousIndex

if TYPE_CHECKING:
    from usearch.index import Index

__all__ = [
    "ANN_CONNECTIVITY",
    "ANN_EXPANSION_ADD",
    "ANN_EXPANSION_SEARCH",
    "ANN_REBUILD_SHARE",
    "ANN_SCALAR",
    "METRIC",
    "AnnPlan",
    "ann_graph",
    "ann_parameters",
    "ann_search",
    "open_ann",
    "plan_ann",
]

METRIC = "cos"
ANN_SCALAR = "f32"
# usearch's own defaults, stated so the manifest records them and a reader restores them
# (the saved file keeps the graph, not the search-time expansion).
ANN_CONNECTIVITY = 16
ANN_EXPANSION_ADD = 128
ANN_EXPANSION_SEARCH = 64
# An incremental refresh updates the previous graph in place (removed nodes leave
# tombstones behind); once the products removed since the last full build pass this
# share of the catalog, the graph is rebuilt from scratch.
ANN_REBUILD_SHARE = 0.2


def open_ann(index_dir: Path, manifest: dict[str, Any]) -> Index:
    """Load ``ann.usearch`` with the search parameters the manifest records."""
    from usearch.index import Index

    ann = manifest["ann"]
    index = Index(
        ndim=manifest["dim"],
        metric=manifest["metric"],
        dtype=ann["dtype"],
        connectivity=ann["connectivity"],
        expansion_add=ann["expansion_add"],
        expansion_search=ann["expansion_search"],
    )
    index.load(str(index_dir / ANN_FILE))
    return index


def ann_search(
    index: Index, queries: npt.NDArray[np.float32], k: int
) -> list[list[tuple[int, float]]]:
    """For each query row, up to ``k`` (product_id, cosine distance) pairs, nearest first."""
    if len(queries) == 0 or len(index) == 0:
        return [[] for _ in range(len(queries))]
    from usearch.index import BatchMatches

    matches = index.search(queries, min(k, len(index)))
    keys = np.asarray(matches.keys, dtype=np.int64)
    distances = np.asarray(matches.distances, dtype=np.float64)
    if not isinstance(matches, BatchMatches):
        # usearch answers a single query (even a 1-row matrix) with a flat, trimmed Matches.
        return [list(zip(keys.tolist(), distances.tolist(), strict=True))]
    counts = np.asarray(matches.counts).tolist()
    return [
        list(zip(keys[row, :n].tolist(), distances[row, :n].tolist(), strict=True))
        for row, n in enumerate(counts)
    ]


def ann_parameters() -> dict[str, Any]:
    """The graph's parameters as the manifest records them (and a refresh compares)."""
    import usearch

    return {
        "library": "usearch",
        "version": usearch.__version__,
        "dtype": ANN_SCALAR,
        "connectivity": ANN_CONNECTIVITY,
        "expansion_add": ANN_EXPANSION_ADD,
        "expansion_search": ANN_EXPANSION_SEARCH,
        "threads": 1,
    }


def _build_ann(ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> Index:
    from usearch.index import Index

    index = Index(
        ndim=vectors.shape[1],
        metric=METRIC,
        dtype=ANN_SCALAR,
        connectivity=ANN_CONNECTIVITY,
        expansion_add=ANN_EXPANSION_ADD,
        expansion_search=ANN_EXPANSION_SEARCH,
    )
    # One thread: with several, insertion order (and so the graph and the saved bytes)
    # depends on scheduling, and the index sha256 would change from run to run.
    index.add(ids.astype(np.uint64), vectors, threads=1)
    return index


@dataclass(frozen=True)
class AnnPlan:
    """How this run gets its ANN graph: the previous one updated, or built from scratch.

    ``previous`` is the index whose graph is updated (None: build from scratch), by
    removing the ``remove`` keys and adding the rows ``add_rows`` of the new index.
    """

    previous: PreviousIndex | None
    remove: npt.NDArray[np.int64]
    add_rows: Sequence[int]
    removed_since_build: int
    reason: str


def plan_ann(
    products: Sequence[CatalogProduct],
    to_encode: Sequence[int],
    dropped: Sequence[int],
    previous: PreviousIndex | None,
) -> AnnPlan:
    none = np.empty(0, dtype=np.int64)
    if previous is None:
        return AnnPlan(None, none, (), 0, "full build")
    changed = [products[row].product_id for row in to_encode]
    remove = sorted([pid for pid in changed if pid in previous.rows] + list(dropped))
    ann = previous.manifest.get("ann") or {}
    removed = int(ann.get("removed_since_build", 0)) + len(remove)
    if {k: ann.get(k) for k in ann_parameters()} != ann_parameters():
        return AnnPlan(None, none, (), 0, "previous graph has other ANN parameters: rebuilt")
    if removed > ANN_REBUILD_SHARE * max(len(products), 1):
        return AnnPlan(None, none, (), 0, f"{removed} removals since the last build: rebuilt")
    return AnnPlan(
        previous, np.asarray(remove, dtype=np.int64), to_encode, removed, "previous graph updated"
    )


def ann_graph(plan: AnnPlan, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> Index:
    """The graph ``plan`` asks for: the previous one updated (one thread), or a new one."""
    if plan.previous is None:
        return _build_ann(ids, vectors)
    index = open_ann(plan.previous.index_dir, plan.previous.manifest)
    if plan.remove.size:
        index.remove(plan.remove.astype(np.uint64))
    if len(plan.add_rows):
        rows = list(plan.add_rows)
        index.add(ids[rows].astype(np.uint64), vectors[rows], threads=1)
    return index
