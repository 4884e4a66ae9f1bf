"""Pairs for the search-service tests: a catalog from the tiny store, embedded and
registered in a ledger as a (model, index) pair the service can load."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from shelfguard.ledger import Ledger
from shelfguard_train.config import EmbedConfig
from shelfguard_train.embed import embed


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Pair:
    """A registered model and the index it built."""

    model_dir: Path
    index_dir: Path
    model_sha256: str
    index_sha256: str
    model_id: int
    index_id: int

    @property
    def shas(self) -> tuple[str, str]:
        return self.model_sha256, self.index_sha256


def named_products(
    tiny_data: Path, folder: Path, keep: int | None = None, shuffled: bool = False
) -> Path:
    """The tiny store's products (the first ``keep``), each named ``product <id>``; with
    ``shuffled``, their texts shuffled across product ids (wrong products for a query)."""
    rows = pq.read_table(tiny_data / "products.parquet").to_pylist()[:keep]
    if shuffled:
        texts = [row["text_to_embed"] for row in rows]
        random.Random(3).shuffle(texts)
        rows = [{**row, "text_to_embed": text} for row, text in zip(rows, texts, strict=True)]
    rows = [{**row, "product_name": f"product {row['product_id']}"} for row in rows]
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "products.parquet")
    return folder / "products.parquet"


def register_pair(
    ledger: Ledger, model_dir: Path, products: Path, out: Path, batch_size: int = 16
) -> Pair:
    """Embed ``products`` with ``model_dir`` into ``out`` and record both in ``ledger``."""
    result = embed(
        EmbedConfig(
            model_dir=model_dir,
            products_path=products,
            output_dir=out,
            batch_size=batch_size,
            device="cpu",
        )
    )
    model = ledger.record_artifact("model", str(model_dir), result.model_sha256)
    index = ledger.record_artifact(
        "index",
        str(result.index_dir),
        result.index_sha256,
        meta={"model_sha256": result.model_sha256},
    )
    return Pair(
        model_dir, result.index_dir, result.model_sha256, result.index_sha256, model.id, index.id
    )
