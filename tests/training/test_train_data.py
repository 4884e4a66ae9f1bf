"""The parquet contract between the marts export and the training package."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shelfguard_train.data import (
    DataContractError,
    read_golden,
    read_pairs,
    read_products,
)


def write(path: Path, columns: dict[str, list[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


PAIRS: dict[str, list[Any]] = {
    "query": ["sofa", "blk rug"],
    "product_id": [2, 1],
    "grade": [1, 3],
    "weight": [1.5, 4.0],
    "split": ["train", "validation"],
}
PRODUCTS: dict[str, list[Any]] = {
    "product_id": [2, 1],
    "text_to_embed": ["A grey sofa.", "A black rug."],
    "product_class": ["Sofas", "Area Rugs"],
    "content_hash": ["h2", "h1"],
}
GOLDEN: dict[str, list[Any]] = {
    "query_id": [0, 0, 1],
    "query": ["snuggler", "snuggler", "rug"],
    "query_class": ["Loveseats", "Loveseats", "Area Rugs"],
    "product_id": [2, 1, 1],
    "grade": [1, 0, 2],
}


def test_reads_the_tiny_export(tiny_data: Path) -> None:
    pairs, products, golden = (
        read_pairs(tiny_data),
        read_products(tiny_data),
        read_golden(tiny_data),
    )
    assert {p.split for p in pairs} == {"train", "validation"}
    assert pairs == sorted(pairs, key=lambda p: (p.query, p.product_id))
    assert {p.product_id for p in pairs} <= {p.product_id for p in products}
    assert all(p.top_category for p in products)
    assert {j.grade for j in golden} == {0, 1, 2}


def test_rows_come_back_sorted_and_typed(tmp_path: Path) -> None:
    write(tmp_path / "pairs.parquet", PAIRS)
    write(tmp_path / "products.parquet", PRODUCTS)
    write(tmp_path / "golden.parquet", GOLDEN)
    assert [p.query for p in read_pairs(tmp_path)] == ["blk rug", "sofa"]
    assert [p.product_id for p in read_products(tmp_path)] == [1, 2]
    assert read_products(tmp_path)[0].top_category is None
    assert [(j.query_id, j.product_id) for j in read_golden(tmp_path)] == [(0, 1), (0, 2), (1, 1)]


@pytest.mark.parametrize(
    ("file", "base", "change", "message"),
    [
        ("pairs.parquet", PAIRS, {"weight": None}, "missing column(s) 'weight'"),
        ("pairs.parquet", PAIRS, {"grade": ["1", "3"]}, "column 'grade' must be integer"),
        ("pairs.parquet", PAIRS, {"grade": [1, 4]}, "column 'grade' must be 1 (click)"),
        ("pairs.parquet", PAIRS, {"weight": [1.0, 0.0]}, "column 'weight' must be > 0"),
        ("pairs.parquet", PAIRS, {"split": ["train", "test"]}, "column 'split' must be 'train'"),
        ("pairs.parquet", PAIRS, {"query": ["sofa", None]}, "column 'query' has 1 null value(s)"),
        (
            "pairs.parquet",
            PAIRS,
            {"query": ["sofa", "sofa"], "product_id": [2, 2]},
            "duplicate (query, product_id)",
        ),
        (
            "products.parquet",
            PRODUCTS,
            {"text_to_embed": None},
            "missing column(s) 'text_to_embed'",
        ),
        ("products.parquet", PRODUCTS, {"product_id": [1, 1]}, "duplicate product_id 1"),
        (
            "products.parquet",
            PRODUCTS,
            {"text_to_embed": ["x", " "]},
            "'text_to_embed' is empty for product_id 1",
        ),
        ("golden.parquet", GOLDEN, {"query_class": None}, "missing column(s) 'query_class'"),
        ("golden.parquet", GOLDEN, {"grade": [1, 0, 3]}, "column 'grade' must be 2 (Exact)"),
        (
            "golden.parquet",
            GOLDEN,
            {"query": ["a", "b", "rug"]},
            "query_id 0 has more than one query",
        ),
    ],
)
def test_contract_violations_name_file_and_column(
    tmp_path: Path,
    file: str,
    base: dict[str, list[Any]],
    change: dict[str, list[Any] | None],
    message: str,
) -> None:
    columns = {**base, **change}
    write(tmp_path / file, {k: v for k, v in columns.items() if v is not None})
    reader = {"pairs.parquet": read_pairs, "products.parquet": read_products}.get(file, read_golden)
    with pytest.raises(DataContractError) as excinfo:
        reader(tmp_path)
    assert message in str(excinfo.value)
    assert str(tmp_path / file) in str(excinfo.value)


def test_missing_and_unreadable_files(tmp_path: Path, tiny_data: Path) -> None:
    with pytest.raises(DataContractError, match=r"pairs\.parquet: file not found"):
        read_pairs(tmp_path)
    (tmp_path / "products.parquet").write_text("not parquet")
    with pytest.raises(DataContractError, match="not a readable parquet file"):
        read_products(tmp_path)
    shutil.copy(tiny_data / "golden.parquet", tmp_path / "golden.parquet")
    assert read_golden(tmp_path)
