"""Embedding the catalog into a search index, and checking an index before it is served.

``embed(config)`` is the one entry point (the CLI, the pod, the local backend and the
tests call it). It encodes every active product's ``text_to_embed`` with the model at
``config.model_dir`` (L2-normalised float32) at ``config.precision`` (for int8, with
the model's OpenVINO export, made here from the catalog's texts or, in incremental
mode, the previous index's: ``shelfguard_train.text_encoder``), or in incremental
mode only the products
that are new or whose ``content_hash`` changed since ``config.previous_index_dir``, and
writes an index folder (its files and manifest: ``shelfguard_train.index_format``);
the ANN graph is built from scratch or, in incremental mode, the previous one is
updated (``shelfguard_train.ann``).

The folder is written next to ``output_dir`` and renamed into place at the end; an
existing index with the same sha256 is left untouched. ``check_index`` then measures
the index (coverage, vectors, model binding, ANN recall, canary queries) and the result
carries those measurements; the orchestration side's index gate applies the policy's
thresholds to them.

This module also re-exports the names callers have always imported from it: the
index format, ``encode_texts``, the ANN search and ``check_index``
(``shelfguard_train.index_checks``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

import shelfguard_train
from shelfguard_train.ann import (
    METRIC,
    AnnPlan,
    ann_graph,
    ann_parameters,
    ann_search,
    open_ann,
    plan_ann,
)
from shelfguard_train.config import EmbedConfig
from shelfguard_train.data import CatalogProduct, read_catalog
from shelfguard_train.encode import embedding_dimension, encode_precision, encode_texts
from shelfguard_train.hashing import file_sha256
from shelfguard_train.index_checks import check_index
from shelfguard_train.index_format import (
    ANN_FILE,
    FORMAT_VERSION,
    INDEX_FILES,
    MANIFEST_FILE,
    PRODUCTS_FILE,
    VECTORS_FILE,
    EmbedError,
    PreviousIndex,
    index_precision,
    index_sha256,
    load_previous,
    read_index_products,
    read_manifest,
)
from shelfguard_train.model import inference_runtime, load_model, model_sha256
from shelfguard_train.text_encoder import ENCODER_DIR, INT8, open_encoder, resolve_precision

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
    plan: AnnPlan,
) -> None:
    """Write the four files into ``folder`` (which may hold the encoder already); the ANN
    graph as ``plan`` says."""
    folder.mkdir(parents=True, exist_ok=True)
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
    ann_graph(plan, ids, vectors).save(str(folder / ANN_FILE))
    log.info("ANN graph: %s in %.1f s", plan.reason, time.perf_counter() - started)
    manifest["ann"] = {
        **ann_parameters(),
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
    previous: PreviousIndex | None,
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
    requested = encode_precision(config, previous_manifest)
    precision, fallback = resolve_precision(
        requested, config.device, fixed=previous_manifest is not None and requested == INT8
    )
    products = read_catalog(config.products_path)
    model = load_model(
        config.model_dir, inference_runtime(config.device, precision), config.max_seq_length
    )
    model_sha = model_sha256(config.model_dir)
    dim = embedding_dimension(model)
    previous = (
        load_previous(config.previous_index_dir, previous_manifest, model_sha, model.max_seq_length)
        if config.previous_index_dir is not None and previous_manifest is not None
        else None
    )
    partial = config.output_dir.with_name(config.output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if previous is not None and precision == INT8:
            # The vectors kept were encoded by the previous index's encoder: the new ones must be too.
            shutil.copytree(previous.index_dir / ENCODER_DIR, partial / ENCODER_DIR)
        encoder = open_encoder(
            config.model_dir,
            precision,
            device=config.device,
            source_sha256=model_sha,
            encoder_dir=partial / ENCODER_DIR,
            calibration_texts=[p.text for p in products],
            model=model,
            fallback=fallback,
        )
        runtime = encoder.runtime
        vectors = np.empty((len(products), dim), dtype=np.float32)
        to_encode, reused, dropped = _reuse(products, previous, vectors)
        mode = "incremental" if previous else "full"
        log.info(
            "embedding %d products with %s (%s, device %s, %s): %d to encode, %d reused, %d dropped",
            len(products),
            config.model_dir,
            mode,
            runtime.device,
            encoder.precision,
            len(to_encode),
            reused,
            len(dropped),
        )
        encode_started = time.perf_counter()
        if to_encode:
            vectors[to_encode] = encoder.encode(
                [products[i].text for i in to_encode], config.batch_size
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
            "precision": encoder.precision,
            "mode": mode,
            "counts": counts,
            "previous_index_sha256": previous.sha256 if previous else None,
            "products_sha256": file_sha256(config.products_path),
            "versions": _versions(),
        }
        if encoder.int8 is not None or encoder.fallback is not None:
            # Only then: a torch index's manifest (and sha256) stays what it has always been.
            manifest["encoder"] = encoder.describe()
        plan = plan_ann(products, to_encode, dropped, previous)
        _write_index(partial, products, vectors, manifest, plan)
        sha = index_sha256(partial)
        _publish(partial, config.output_dir, sha)
    except BaseException:
        # Nothing half-built is left beside the index.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("index %s written to %s", sha, config.output_dir)
    checks = check_index(
        config.output_dir,
        config.products_path,
        config.model_dir,
        config.golden_path,
        sample_size=config.ann_sample_size,
        k=config.canary_k,
        seed=config.seed,
        encoder=encoder,
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
