"""Embedding the catalog into a search index, and checking an index before it is served.

``embed(config)`` is the one entry point (the CLI, the pod, the local backend and the
tests call it). It encodes every active product's ``text_to_embed`` with the model at
``config.model_dir`` (L2-normalised float32), or in incremental mode only the products
that are new or whose ``content_hash`` changed since ``config.previous_index_dir``, and
writes an index folder:

- ``manifest.json``: what the index is (format, model sha256, dimension, count, metric,
  ANN parameters, max_seq_length, precision, counts, previous index sha256). No timestamps and no
  paths: the same inputs give the same bytes, so ``index_sha256`` is reproducible.
- ``products.parquet``: product_id, content_hash, product_name, product_class, in
  product_id order.
- ``vectors.npy``: one float32 row per product, in the same order.
- ``ann.usearch``: a usearch HNSW index (cosine, f32) keyed by product_id. A full
  build inserts every vector; an incremental one loads the previous graph, removes the
  changed and dropped products and inserts the new vectors, until the removals since
  the last full build pass ``ANN_REBUILD_SHARE`` of the catalog, when it rebuilds.

The folder is written next to ``output_dir`` and renamed into place at the end; an
existing index with the same sha256 is left untouched. ``check_index`` then measures
the index (coverage, vectors, model binding, ANN recall, canary queries) and the result
carries those measurements; the orchestration side's index gate applies the policy's
thresholds to them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

import shelfguard_train
from shelfguard_train.config import EmbedConfig
from shelfguard_train.data import (
    _GOLDEN_COLUMNS,
    _PRODUCTS_COLUMNS,
    _STRING,
    DataContractError,
    _read,
    checked_products,
    file_sha256,
)
from shelfguard_train.evaluate import EXACT
from shelfguard_train.model import Runtime, inference_runtime, load_model, model_sha256

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from usearch.index import Index

__all__ = [
    "ANN_FILE",
    "INDEX_FILES",
    "MANIFEST_FILE",
    "PRODUCTS_FILE",
    "VECTORS_FILE",
    "CatalogProduct",
    "EmbedError",
    "EmbedResult",
    "ann_search",
    "check_index",
    "embed",
    "encode_texts",
    "index_precision",
    "index_sha256",
    "open_ann",
    "read_catalog",
    "read_index_products",
    "read_manifest",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
PRODUCTS_FILE = "products.parquet"
VECTORS_FILE = "vectors.npy"
ANN_FILE = "ann.usearch"
# The order index_sha256 hashes the files in; part of the format.
INDEX_FILES = (MANIFEST_FILE, PRODUCTS_FILE, VECTORS_FILE, ANN_FILE)
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
_LOG_EVERY_BATCHES = 20
_LENGTH_CHUNK = 10_000
_REPORTED_IDS = 20
_REPORTED_MISSES = 5
_EXACT_CHUNK_CELLS = 1 << 24


class EmbedError(ValueError):
    """An index cannot be built or read as asked (e.g. a previous index of another model)."""


@dataclass(frozen=True)
class CatalogProduct:
    """One active product as the index needs it: its text, hash and display fields."""

    product_id: int
    text: str
    content_hash: str
    product_name: str
    product_class: str


@dataclass(frozen=True)
class EmbedResult:
    """What ``embed`` built; ``to_dict()`` is the JSON the orchestrator reads back."""

    index_dir: Path
    index_sha256: str
    model_sha256: str
    dim: int
    mode: str
    counts: dict[str, int]
    seconds: float
    encode_seconds: float
    products_per_second: float
    checks: dict[str, Any]
    config_hash: str
    previous_index_sha256: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "index_dir": str(self.index_dir),
            "index_sha256": self.index_sha256,
            "model_sha256": self.model_sha256,
            "dim": self.dim,
            "mode": self.mode,
            "counts": self.counts,
            "seconds": self.seconds,
            "encode_seconds": self.encode_seconds,
            "products_per_second": self.products_per_second,
            "checks": self.checks,
            "config_hash": self.config_hash,
            "previous_index_sha256": self.previous_index_sha256,
        }


def read_catalog(path: Path) -> list[CatalogProduct]:
    """Read and check an exported ``products.parquet``; rows come back in product_id order.

    ``product_name`` is optional (older exports lack it) and reads as an empty string
    when absent. Product ids must be non-negative: they are the ANN index's unsigned keys.
    """
    columns = _read(path, _PRODUCTS_COLUMNS, optional={"product_name": _STRING})
    names = columns.get("product_name") or [""] * len(columns["product_id"])
    products = [
        CatalogProduct(product_id=p, text=t, content_hash=h, product_name=n, product_class=c)
        for p, t, h, n, c in zip(
            columns["product_id"],
            columns["text_to_embed"],
            columns["content_hash"],
            names,
            columns["product_class"],
            strict=True,
        )
    ]
    products = checked_products(path, products)
    for product in products:
        if product.product_id < 0:
            raise DataContractError(
                f"{path}: column 'product_id' must be >= 0, got {product.product_id}"
            )
    return products


def encode_texts(
    model: SentenceTransformer,
    texts: Sequence[str],
    batch_size: int = 64,
    runtime: Runtime | None = None,
) -> npt.NDArray[np.float32]:
    """L2-normalised float32 embeddings of ``texts``, one row per text, in input order.

    Equivalent to ``model.encode(texts, normalize_embeddings=True)`` but faster on a
    catalog: texts are batched in order of their token count (after truncation to the
    model's ``max_seq_length``), so a batch pads to almost nothing; batches run under
    ``torch.inference_mode()`` and stay on the device until one copy to numpy at the end.
    Logs throughput every few batches.
    """
    import torch

    runtime = runtime or Runtime(device=str(model.device.type))
    total = len(texts)
    dim = _embedding_dimension(model)
    if total == 0:
        return np.empty((0, dim), dtype=np.float32)
    # Stable, so equal lengths keep input order and a rerun batches identically (on CPU
    # the same batches give the same bytes).
    order = np.argsort(-_token_lengths(model, texts), kind="stable")
    model.eval()
    out = torch.empty((total, dim), dtype=torch.float32, device=runtime.device)
    started = time.perf_counter()
    batches = (total + batch_size - 1) // batch_size
    with torch.inference_mode(), runtime.autocast():
        for batch, start in enumerate(range(0, total, batch_size), start=1):
            rows = order[start : start + batch_size]
            features = model.preprocess([texts[i] for i in rows.tolist()])
            features = {
                k: v.to(runtime.device) if isinstance(v, torch.Tensor) else v
                for k, v in features.items()
            }
            embeddings = model(features)["sentence_embedding"].float()
            out[start : start + len(rows)] = torch.nn.functional.normalize(embeddings, dim=1)
            if batch % _LOG_EVERY_BATCHES == 0 or (batch == batches > 1):
                done = min(start + batch_size, total)
                elapsed = time.perf_counter() - started
                log.info(
                    "encoded %d/%d texts, %.1f texts/s",
                    done,
                    total,
                    done / elapsed if elapsed else 0.0,
                )
    vectors = np.empty((total, dim), dtype=np.float32)
    vectors[order] = out.cpu().numpy()
    return vectors


def _embedding_dimension(model: SentenceTransformer) -> int:
    dim = model.get_embedding_dimension()
    if dim is None:
        raise EmbedError("the model does not declare its embedding dimension")
    return int(dim)


def _token_lengths(model: SentenceTransformer, texts: Sequence[str]) -> npt.NDArray[np.int64]:
    from transformers import PreTrainedTokenizerBase

    max_length = model.max_seq_length
    if not isinstance(getattr(model[0], "tokenizer", None), PreTrainedTokenizerBase):
        # Not a transformers tokenizer (e.g. static embeddings): characters stand in.
        return np.array([len(text) for text in texts], dtype=np.int64)
    lengths = np.empty(len(texts), dtype=np.int64)
    # In chunks: a million tokenised texts held as Python lists would take gigabytes.
    for start in range(0, len(texts), _LENGTH_CHUNK):
        chunk = list(texts[start : start + _LENGTH_CHUNK])
        ids = model.tokenizer(
            chunk,
            truncation=max_length is not None,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        lengths[start : start + len(chunk)] = [len(row) for row in ids]
    return lengths


def index_sha256(index_dir: Path) -> str:
    """sha256 over the index files in ``INDEX_FILES`` order: the index's identity.

    Each file contributes its name, a NUL byte, its size as 8 big-endian bytes and its
    content (as ``model_sha256`` does for a model folder).
    """
    digest = hashlib.sha256()
    for name in INDEX_FILES:
        path = index_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"{index_dir}: not an index folder ({name} is missing)")
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


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


def _ann_parameters() -> dict[str, Any]:
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
class _Previous:
    index_dir: Path
    sha256: str
    manifest: dict[str, Any]
    rows: dict[int, tuple[int, str]]
    vectors: npt.NDArray[np.float32]


@dataclass(frozen=True)
class _AnnPlan:
    """How this run gets its ANN graph: the previous one updated, or built from scratch.

    ``previous`` is the index whose graph is updated (None: build from scratch), by
    removing the ``remove`` keys and adding the rows ``add_rows`` of the new index.
    """

    previous: _Previous | None
    remove: npt.NDArray[np.int64]
    add_rows: Sequence[int]
    removed_since_build: int
    reason: str


def _plan_ann(
    products: Sequence[CatalogProduct],
    to_encode: Sequence[int],
    dropped: Sequence[int],
    previous: _Previous | None,
) -> _AnnPlan:
    none = np.empty(0, dtype=np.int64)
    if previous is None:
        return _AnnPlan(None, none, (), 0, "full build")
    changed = [products[row].product_id for row in to_encode]
    remove = sorted([pid for pid in changed if pid in previous.rows] + list(dropped))
    ann = previous.manifest.get("ann") or {}
    removed = int(ann.get("removed_since_build", 0)) + len(remove)
    if {k: ann.get(k) for k in _ann_parameters()} != _ann_parameters():
        return _AnnPlan(None, none, (), 0, "previous graph has other ANN parameters: rebuilt")
    if removed > ANN_REBUILD_SHARE * max(len(products), 1):
        return _AnnPlan(None, none, (), 0, f"{removed} removals since the last build: rebuilt")
    return _AnnPlan(
        previous, np.asarray(remove, dtype=np.int64), to_encode, removed, "previous graph updated"
    )


def _ann_graph(
    plan: _AnnPlan, ids: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]
) -> Index:
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


def _precision(config: EmbedConfig, previous_manifest: dict[str, Any] | None) -> str:
    """The precision to encode with: in incremental mode, the previous index's."""
    if previous_manifest is None:
        return config.precision
    previous = index_precision(previous_manifest)
    if config.precision not in ("auto", previous):
        raise EmbedError(
            f"previous index {config.previous_index_dir} was encoded in {previous}, this "
            f"run asks for {config.precision}: its vectors cannot be reused; build a full "
            "index (no previous_index_dir)"
        )
    return previous


def _load_previous(
    index_dir: Path, manifest: dict[str, Any], model_sha: str, max_seq_length: int | None
) -> _Previous:
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
    return _Previous(index_dir=index_dir, sha256=sha, manifest=manifest, rows=rows, vectors=vectors)


def _versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "shelfguard_train": shelfguard_train.__version__,
    }


def _write_index(
    folder: Path,
    products: Sequence[CatalogProduct],
    vectors: npt.NDArray[np.float32],
    manifest: dict[str, Any],
    plan: _AnnPlan,
) -> None:
    """Write the four files; the ANN graph as ``plan`` says."""
    folder.mkdir(parents=True)
    ids = np.array([p.product_id for p in products], dtype=np.int64)
    table = pa.table(
        {
            "product_id": pa.array(ids, type=pa.int64()),
            "content_hash": pa.array([p.content_hash for p in products], type=pa.string()),
            "product_name": pa.array([p.product_name for p in products], type=pa.string()),
            "product_class": pa.array([p.product_class for p in products], type=pa.string()),
        }
    )
    pq.write_table(table, folder / PRODUCTS_FILE)
    np.save(folder / VECTORS_FILE, vectors, allow_pickle=False)
    started = time.perf_counter()
    _ann_graph(plan, ids, vectors).save(str(folder / ANN_FILE))
    log.info("ANN graph: %s in %.1f s", plan.reason, time.perf_counter() - started)
    manifest["ann"] = {
        **_ann_parameters(),
        "built": "full" if plan.previous is None else "updated",
        "removed_since_build": plan.removed_since_build,
    }
    (folder / MANIFEST_FILE).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _publish(partial: Path, target: Path, sha: str) -> None:
    """Move ``partial`` to ``target``, unless ``target`` already holds the same index."""
    if target.is_dir():
        try:
            unchanged = index_sha256(target) == sha
        except FileNotFoundError:
            unchanged = False
        if unchanged:
            shutil.rmtree(partial)
            log.info("%s already holds index %s; left unchanged", target, sha)
            return
        # A directory cannot be renamed over a non-empty one: move the old index aside
        # first; a reader in that instant finds no index, never half of one.
        retired = target.with_name(target.name + ".old")
        shutil.rmtree(retired, ignore_errors=True)
        target.rename(retired)
        partial.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(target)


def _reuse(
    products: Sequence[CatalogProduct],
    previous: _Previous | None,
    vectors: npt.NDArray[np.float32],
) -> tuple[list[int], int, list[int]]:
    """Copy the previous vectors of unchanged products into ``vectors``.

    Returns the rows still to encode (new or changed products), how many were reused
    and the ids of previous products that are no longer active (dropped).
    """
    if previous is None:
        return list(range(len(products))), 0, []
    to_encode: list[int] = []
    reuse_to: list[int] = []
    reuse_from: list[int] = []
    for row, product in enumerate(products):
        kept = previous.rows.get(product.product_id)
        if kept is not None and kept[1] == product.content_hash:
            reuse_to.append(row)
            reuse_from.append(kept[0])
        else:
            to_encode.append(row)
    if reuse_to:
        vectors[reuse_to] = previous.vectors[reuse_from]
    active = {p.product_id for p in products}
    dropped = [product_id for product_id in previous.rows if product_id not in active]
    return to_encode, len(reuse_to), dropped


def embed(config: EmbedConfig) -> EmbedResult:
    """Build (or update) the catalog's search index; measure it with ``check_index``.

    Raises ``DataContractError`` for bad inputs, ``ConfigError`` for a missing model or
    an unusable device, and ``EmbedError`` when ``previous_index_dir`` cannot be reused
    (built with another model or max_seq_length); all are user errors the CLI reports
    in one line.
    """
    started = time.perf_counter()
    previous_manifest = (
        read_manifest(config.previous_index_dir) if config.previous_index_dir else None
    )
    runtime = inference_runtime(config.device, _precision(config, previous_manifest))
    products = read_catalog(config.products_path)
    model = load_model(config.model_dir, runtime, config.max_seq_length)
    model_sha = model_sha256(config.model_dir)
    dim = _embedding_dimension(model)
    previous = (
        _load_previous(
            config.previous_index_dir, previous_manifest, model_sha, model.max_seq_length
        )
        if config.previous_index_dir is not None and previous_manifest is not None
        else None
    )
    vectors = np.empty((len(products), dim), dtype=np.float32)
    to_encode, reused, dropped = _reuse(products, previous, vectors)
    mode = "incremental" if previous else "full"
    log.info(
        "embedding %d products with %s (%s, device %s, %s): %d to encode, %d reused, %d dropped",
        len(products),
        config.model_dir,
        mode,
        runtime.device,
        runtime.precision,
        len(to_encode),
        reused,
        len(dropped),
    )
    encode_started = time.perf_counter()
    if to_encode:
        vectors[to_encode] = encode_texts(
            model, [products[i].text for i in to_encode], config.batch_size, runtime
        )
    encode_seconds = time.perf_counter() - encode_started
    counts = {
        "products": len(products),
        "encoded": len(to_encode),
        "reused": reused,
        "dropped": len(dropped),
    }
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_sha256": model_sha,
        "dim": dim,
        "count": len(products),
        "metric": METRIC,
        "dtype": "float32",
        "normalized": True,
        "max_seq_length": model.max_seq_length,
        "precision": runtime.precision,
        "mode": mode,
        "counts": counts,
        "previous_index_sha256": previous.sha256 if previous else None,
        "products_sha256": file_sha256(config.products_path),
        "versions": _versions(),
    }
    partial = config.output_dir.with_name(config.output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    plan = _plan_ann(products, to_encode, dropped, previous)
    _write_index(partial, products, vectors, manifest, plan)
    sha = index_sha256(partial)
    _publish(partial, config.output_dir, sha)
    log.info("index %s written to %s", sha, config.output_dir)
    checks = check_index(
        config.output_dir,
        config.products_path,
        config.model_dir,
        config.golden_path,
        sample_size=config.ann_sample_size,
        k=config.canary_k,
        seed=config.seed,
        model=model,
        runtime=runtime,
        batch_size=config.batch_size,
    )
    return EmbedResult(
        index_dir=config.output_dir,
        index_sha256=sha,
        model_sha256=model_sha,
        dim=dim,
        mode=mode,
        counts=counts,
        seconds=round(time.perf_counter() - started, 2),
        encode_seconds=round(encode_seconds, 2),
        products_per_second=round(len(to_encode) / encode_seconds, 2)
        if to_encode and encode_seconds
        else 0.0,
        checks=checks,
        config_hash=config.config_hash(),
        previous_index_sha256=previous.sha256 if previous else None,
    )


def check_index(
    index_dir: Path,
    products_path: Path,
    model_dir: Path,
    golden_path: Path | None = None,
    sample_size: int = 500,
    k: int = 10,
    seed: int = 42,
    *,
    model: SentenceTransformer | None = None,
    runtime: Runtime | None = None,
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
    - ``ann``: ``recall@k`` of the ANN search against exact search, over a seeded sample
      of ``sample_size`` indexed vectors used as queries.
    - ``canary``: golden queries with an indexed Exact product, how many find one in the
      ANN top k, and a few misses (None without ``golden_path``).

    ``model`` is ``model_dir`` already loaded (``embed`` passes its own).
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
    if model is None:
        runtime = runtime or inference_runtime("auto", index_precision(manifest))
        model = load_model(model_dir, runtime, manifest.get("max_seq_length"))
    expected_dim = _embedding_dimension(model)
    checks: dict[str, Any] = {
        "coverage": _coverage(catalog, table, vectors, ann),
        "vectors": _vector_stats(vectors, expected_dim),
        "model": {
            "manifest_sha256": manifest.get("model_sha256"),
            "actual_sha256": actual_sha,
            "matches": manifest.get("model_sha256") == actual_sha,
        },
        "ann": _ann_recall(ann, ids, vectors, sample_size, k, seed),
        "canary": None,
    }
    if golden_path is not None:
        if expected_dim != vectors.shape[1]:
            mismatch = f"model dimension {expected_dim} != index dimension {vectors.shape[1]}"
            checks["canary"] = {"skipped": mismatch}
        else:
            checks["canary"] = _canary(
                golden_path, set(ids.tolist()), ann, model, k, runtime, batch_size
            )
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
    model: SentenceTransformer,
    k: int,
    runtime: Runtime | None,
    batch_size: int,
) -> dict[str, Any]:
    canaries = _read_canaries(golden_path, indexed)
    if not canaries:
        return {"k": k, "queries": 0, "hits": 0, "hit_rate": None, "misses": []}
    queries = encode_texts(model, [text for _, text, _ in canaries], batch_size, runtime)
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
