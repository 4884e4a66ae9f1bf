"""Reading the parquet files the orchestration side exports from the dbt marts.

This is the contract between the two sides; the file and column names are fixed:

- ``pairs.parquet``: query (str, normalised), product_id (int64), grade (1 click,
  2 cart, 3 purchase), weight (float > 0), split ('train' | 'validation')
- ``products.parquet``: product_id (int64), text_to_embed (str), product_class (str),
  content_hash (str), optionally top_category (str); active products only
- ``golden.parquet``: query_id (int64), query (str), query_class (str),
  product_id (int64), grade (2 Exact, 1 Partial, 0 Irrelevant)

Every violation raises ``DataContractError`` naming the file and the column.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from shelfguard_train.hashing import file_sha256

__all__ = [
    "GOLDEN_FILE",
    "PAIRS_FILE",
    "PRODUCTS_FILE",
    "CatalogProduct",
    "DataContractError",
    "Judgement",
    "Pair",
    "Product",
    "file_sha256",
    "read_catalog",
    "read_golden",
    "read_pairs",
    "read_products",
]

log = logging.getLogger(__name__)

PAIRS_FILE = "pairs.parquet"
PRODUCTS_FILE = "products.parquet"
GOLDEN_FILE = "golden.parquet"
SPLITS = ("train", "validation")


class DataContractError(ValueError):
    """An input file is missing, unreadable or breaks the column contract."""


@dataclass(frozen=True)
class Pair:
    """One (query, product) pair from the click logs, with its engagement."""

    query: str
    product_id: int
    grade: int
    weight: float
    split: str


@dataclass(frozen=True)
class Product:
    """One active catalog product and the text the model encodes for it."""

    product_id: int
    text: str
    product_class: str
    content_hash: str
    top_category: str | None = None


@dataclass(frozen=True)
class Judgement:
    """One golden-set judgement: how relevant a product is for a golden query."""

    query_id: int
    query: str
    query_class: str
    product_id: int
    grade: int


_Check = Callable[[pa.DataType], bool]
_STRING: tuple[str, _Check] = (
    "string",
    lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
)
_INTEGER: tuple[str, _Check] = ("integer", pa.types.is_integer)
_NUMBER: tuple[str, _Check] = (
    "number",
    lambda t: pa.types.is_floating(t) or pa.types.is_integer(t),
)

_PAIRS_COLUMNS = {
    "query": _STRING,
    "product_id": _INTEGER,
    "grade": _INTEGER,
    "weight": _NUMBER,
    "split": _STRING,
}
_PRODUCTS_COLUMNS = {
    "product_id": _INTEGER,
    "text_to_embed": _STRING,
    "product_class": _STRING,
    "content_hash": _STRING,
}
_GOLDEN_COLUMNS = {
    "query_id": _INTEGER,
    "query": _STRING,
    "query_class": _STRING,
    "product_id": _INTEGER,
    "grade": _INTEGER,
}


def read_pairs(data_dir: Path) -> list[Pair]:
    """Read and check ``pairs.parquet``; rows come back in (query, product_id) order."""
    path = data_dir / PAIRS_FILE
    columns = _read(path, _PAIRS_COLUMNS)
    pairs = [
        Pair(query=q, product_id=p, grade=g, weight=float(w), split=s)
        for q, p, g, w, s in zip(*(columns[c] for c in _PAIRS_COLUMNS), strict=True)
    ]
    for pair in pairs:
        if not pair.query.strip():
            raise DataContractError(f"{path}: column 'query' holds an empty query")
        if pair.grade not in (1, 2, 3):
            raise DataContractError(
                f"{path}: column 'grade' must be 1 (click), 2 (cart) or 3 (purchase), "
                f"got {pair.grade} for {pair.query!r}"
            )
        if not pair.weight > 0:
            raise DataContractError(
                f"{path}: column 'weight' must be > 0, got {pair.weight} for {pair.query!r}"
            )
        if pair.split not in SPLITS:
            raise DataContractError(
                f"{path}: column 'split' must be 'train' or 'validation', got {pair.split!r}"
            )
    _check_unique(path, [(p.query, p.product_id) for p in pairs], "(query, product_id)")
    # Sorting makes the training order independent of how the export wrote its row groups.
    return sorted(pairs, key=lambda p: (p.query, p.product_id))


def read_products(data_dir: Path) -> list[Product]:
    """Read and check ``products.parquet``; rows come back in product_id order."""
    path = data_dir / PRODUCTS_FILE
    columns = _read(path, _PRODUCTS_COLUMNS, optional={"top_category": _STRING})
    top = columns.get("top_category") or [None] * len(columns["product_id"])
    products = [
        Product(product_id=p, text=t, product_class=c, content_hash=h, top_category=tc)
        for p, t, c, h, tc in zip(
            columns["product_id"],
            columns["text_to_embed"],
            columns["product_class"],
            columns["content_hash"],
            top,
            strict=True,
        )
    ]
    return checked_products(path, products)


class _HasText(Protocol):
    @property
    def product_id(self) -> int: ...
    @property
    def text(self) -> str: ...


P = TypeVar("P", bound=_HasText)


def checked_products(path: Path, products: list[P]) -> list[P]:
    """The products of a ``products.parquet`` checked (some, each with text, ids unique)
    and in product_id order; shared by the training and the embedding readers."""
    if not products:
        raise DataContractError(f"{path}: no products")
    for product in products:
        if not product.text.strip():
            raise DataContractError(
                f"{path}: column 'text_to_embed' is empty for product_id {product.product_id}"
            )
    _check_unique(path, [p.product_id for p in products], "product_id")
    return sorted(products, key=lambda p: p.product_id)


def read_golden(data_dir: Path) -> list[Judgement]:
    """Read and check ``golden.parquet``; rows come back in (query_id, product_id) order."""
    path = data_dir / GOLDEN_FILE
    columns = _read(path, _GOLDEN_COLUMNS)
    judgements = [
        Judgement(query_id=i, query=q, query_class=c, product_id=p, grade=g)
        for i, q, c, p, g in zip(*(columns[c] for c in _GOLDEN_COLUMNS), strict=True)
    ]
    if not judgements:
        raise DataContractError(f"{path}: no judgements")
    texts: dict[int, tuple[str, str]] = {}
    for j in judgements:
        if j.grade not in (0, 1, 2):
            raise DataContractError(
                f"{path}: column 'grade' must be 2 (Exact), 1 (Partial) or 0 (Irrelevant), "
                f"got {j.grade} for query_id {j.query_id}"
            )
        if texts.setdefault(j.query_id, (j.query, j.query_class)) != (j.query, j.query_class):
            raise DataContractError(
                f"{path}: query_id {j.query_id} has more than one query or query_class"
            )
    _check_unique(path, [(j.query_id, j.product_id) for j in judgements], "(query_id, product_id)")
    return sorted(judgements, key=lambda j: (j.query_id, j.product_id))


@dataclass(frozen=True)
class CatalogProduct:
    """One active product as the index needs it: its text, hash and display fields."""

    product_id: int
    text: str
    content_hash: str
    product_name: str
    product_class: str


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


def _read(
    path: Path,
    required: dict[str, tuple[str, _Check]],
    optional: dict[str, tuple[str, _Check]] | None = None,
) -> dict[str, list[Any]]:
    optional = optional or {}
    if not path.is_file():
        raise DataContractError(f"{path}: file not found")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataContractError(f"{path}: not a readable parquet file ({exc})") from exc
    missing = [name for name in required if name not in schema.names]
    if missing:
        raise DataContractError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} "
            f"(expected {', '.join(required)})"
        )
    wanted = {**required, **{k: v for k, v in optional.items() if k in schema.names}}
    for name, (kind, check) in wanted.items():
        actual = schema.field(name).type
        if not check(actual):
            raise DataContractError(f"{path}: column {name!r} must be {kind}, found {actual}")
    table = pq.read_table(path, columns=list(wanted))
    columns: dict[str, list[Any]] = {}
    for name in wanted:
        column = table.column(name)
        if column.null_count:
            raise DataContractError(
                f"{path}: column {name!r} has {column.null_count} null value(s)"
            )
        columns[name] = column.to_pylist()
    return columns


def _check_unique(path: Path, keys: Sequence[object], what: str) -> None:
    seen: set[object] = set()
    for key in keys:
        if key in seen:
            raise DataContractError(f"{path}: duplicate {what} {key!r}")
        seen.add(key)
