"""Product rows: the hidden attributes rendered as WANDS text, the row defects, and
product.csv."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.catalog import _Catalog, _ChangePlan
from shelfguard.data.generator.defects import (
    _BAD_NUMBERS,
    _DEFECT_RATES,
    _ROW_DEFECTS,
    _TEXT_IS_DATA,
)
from shelfguard.data.generator.files import (
    _BAD_UTF8_MARKERS,
    _CHUNK_ROWS,
    ProgressCallback,
    _atomic_writer,
    _encode,
    _header,
)
from shelfguard.data.generator.streams import _Streams
from shelfguard.data.generator.vocabulary import (
    _BRANDS,
    _CLASSES,
    _CLOSERS,
    _COLORS,
    _MATERIALS,
    _MODELS,
    _STYLES,
)
from shelfguard.data.wands import PRODUCT_COLUMNS


class _ProductRow(NamedTuple):
    """One product's hidden attributes as plain Python numbers, for text rendering."""

    product_id: int
    cls: int
    color: int
    material: int
    size: int
    brand: int
    style: int
    model: int
    price: float
    rating_count: int
    average_rating: float
    review_count: int


def _catalog_rows(catalog: _Catalog, begin: int, end: int) -> Iterator[_ProductRow]:
    # One tolist() per column and chunk: indexing numpy arrays element by element is slow.
    columns = zip(
        range(begin, end),
        catalog.cls[begin:end].tolist(),
        catalog.color[begin:end].tolist(),
        catalog.material[begin:end].tolist(),
        catalog.size[begin:end].tolist(),
        catalog.brand[begin:end].tolist(),
        catalog.style[begin:end].tolist(),
        catalog.model[begin:end].tolist(),
        catalog.price[begin:end].tolist(),
        catalog.rating_count[begin:end].tolist(),
        catalog.average_rating[begin:end].tolist(),
        catalog.review_count[begin:end].tolist(),
        strict=True,
    )
    for values in columns:
        yield _ProductRow(*values)


def _article(word: str) -> str:
    vowel_sound = word[:1].lower() in "aeio8" or word.startswith(("11", "18", "L-"))
    return "An" if vowel_sound else "A"


def _product_fields(row: _ProductRow, rnd: random.Random) -> list[str]:
    """The nine WANDS fields of one product, in PRODUCT_COLUMNS order."""
    pc = _CLASSES[row.cls]
    brand = _BRANDS[row.brand]
    color = _COLORS[row.color]
    material = _MATERIALS[row.material]
    size_printed, size_prose = pc.sizes[row.size] if row.size >= 0 else ("", "")
    name_parts = [brand, _MODELS[row.model]]
    if size_printed and rnd.random() < 0.6:
        name_parts.append(size_printed)
    if rnd.random() < 0.7:
        name_parts.append(color)
    if rnd.random() < 0.55:
        name_parts.append(material)
    name_parts.append(rnd.choice(pc.subtypes))

    lead = " ".join(w for w in (size_prose, color.lower(), material.lower()) if w)
    noun = rnd.choice(pc.nouns)
    sentences = [f"{_article(lead)} {lead} {noun} {rnd.choice(pc.phrases)}."]
    if rnd.random() < 0.7:
        sentences.append(f"{_STYLES[row.style]} lines suit any {pc.room}.")
    if rnd.random() < 0.4:
        sentences.append(rnd.choice(_CLOSERS))

    features = [
        f"brand:{brand}",
        f"color:{color}",
        f"material:{material}",
        f"price:{row.price:.2f}",
        f"style:{_STYLES[row.style]}",
    ]
    if size_printed:
        features.append(f"{pc.size_feature}:{size_printed}")
    features.extend(f"{key}:{rnd.choice(values)}" for key, values in pc.extras)

    rated = row.rating_count >= 0
    return [
        str(row.product_id),
        " ".join(name_parts),
        pc.name,
        pc.path,
        " ".join(sentences),
        "|".join(features),
        str(row.rating_count) if rated else "",
        f"{row.average_rating:.1f}" if rated else "",
        str(row.review_count) if rated else "",
    ]


def _clean_fields(row: _ProductRow, rnd: random.Random, plan: _ChangePlan) -> list[str]:
    """A product's product.csv fields before any defect (text-is-data cases included)."""
    fields = _product_fields(row, rnd)
    if row.product_id in plan.text_is_data:
        _apply_text_is_data(fields, plan.text_is_data[row.product_id])
    return fields


def _apply_text_is_data(fields: list[str], case: int) -> None:
    column, template = _TEXT_IS_DATA[case]
    fields[column] = template.replace("{}", fields[column])


class _ProductDefects:
    """Row-level defects of product.csv: which rows, and how each is damaged."""

    def __init__(self, n: int, chosen: tuple[str, ...], streams: _Streams) -> None:
        self.chosen = chosen
        self.masks: dict[str, npt.NDArray[np.bool_]] = {}
        self.rnd: dict[str, random.Random] = {}
        for name in _ROW_DEFECTS:
            if name in chosen:
                # An exact count, not a coin per row: small test catalogs still get the rate.
                size = max(3, round(n * _DEFECT_RATES[name]))
                hit = streams.numpy(name).choice(n, size=size, replace=False)
                self.masks[name] = np.zeros(n, dtype=np.bool_)
                self.masks[name][hit] = True
                self.rnd[name] = streams.python(name)
        self.columns = _product_header(chosen)

    def hits(self, begin: int, end: int) -> dict[int, list[str]]:
        """product id -> names of the row defects it gets, for the rows in [begin, end)."""
        found: dict[int, list[str]] = {}
        for name, mask in self.masks.items():
            for offset in np.flatnonzero(mask[begin:end]).tolist():
                found.setdefault(begin + offset, []).append(name)
        return found

    def damage(self, fields: list[str], names: list[str]) -> None:
        """Apply in-place value defects (not duplication, not schema, not raggedness)."""
        for name in names:
            rnd = self.rnd[name]
            if name == "empty_names":
                fields[1] = ""
            elif name == "bad_numbers":
                fields[rnd.choice((6, 7, 8))] = rnd.choice(_BAD_NUMBERS)
            elif name == "out_of_range":
                column, value = rnd.choice(((7, "7.5"), (7, "-1"), (7, "12.0"), (6, "-3")))
                fields[column] = value
            elif name == "bad_utf8":
                column = rnd.choice((1, 4))
                cut = rnd.randrange(len(fields[column]) + 1)
                marker = rnd.choice(tuple(_BAD_UTF8_MARKERS))
                fields[column] = fields[column][:cut] + marker + fields[column][cut:]

    def duplicate(self, fields: list[str]) -> list[str]:
        """A later 'version' of the same product id with slightly different text."""
        rnd = self.rnd["duplicate_ids"]
        copy = list(fields)
        edit = rnd.randrange(3)
        if edit == 0:
            copy[1] = f"{copy[1]} (New)"
        elif edit == 1:
            copy[4] = f"{copy[4]} Now in a refreshed finish."
        else:
            copy[1] = f"{copy[1]} - Clearance"
        return copy

    def layout(self, fields: list[str], ragged: bool) -> str:
        """Apply the schema defects to one row, then raggedness, and join it."""
        out = list(fields)
        if "schema_missing" in self.chosen:
            del out[2]
        if "schema_extra" in self.chosen:
            out.append("check supplier feed" if fields[0].endswith("7") else "")
        if ragged:
            rnd = self.rnd["ragged_rows"]
            out = out[: rnd.randrange(2, len(out) - 1)] if rnd.random() < 0.5 else [*out, "x"]
        return "\t".join(out)


def _product_header(chosen: tuple[str, ...]) -> list[str]:
    columns = list(PRODUCT_COLUMNS)
    if "schema_renamed" in chosen:
        columns[columns.index("product_name")] = "product_title"
    if "schema_missing" in chosen:
        columns.remove("product_class")
    if "schema_extra" in chosen:
        columns.append("internal_notes")
    return columns


def _write_products(
    path: Path,
    catalog: _Catalog,
    plan: _ChangePlan,
    chosen: tuple[str, ...],
    streams: _Streams,
    report: ProgressCallback,
) -> tuple[int, dict[int, list[str]]]:
    """Stream product.csv; return its data-row count and the clean rows the feed updates."""
    n = catalog.size_of_catalog
    rnd = streams.python("text")
    defects = _ProductDefects(n, chosen, streams)
    wanted = set(plan.updated.tolist())
    captured: dict[int, list[str]] = {}
    written = 0
    with _atomic_writer(path) as handle:
        handle.write(_header(defects.columns))
        for begin in range(0, n, _CHUNK_ROWS):
            end = min(n, begin + _CHUNK_ROWS)
            hits = defects.hits(begin, end)
            lines: list[str] = []
            later: list[str] = []
            for row in _catalog_rows(catalog, begin, end):
                fields = _clean_fields(row, rnd, plan)
                if row.product_id in wanted:
                    captured[row.product_id] = list(fields)
                names = hits.get(row.product_id, [])
                if names:
                    defects.damage(fields, names)
                    if "duplicate_ids" in names:
                        later.append(defects.layout(defects.duplicate(fields), False))
                lines.append(defects.layout(fields, "ragged_rows" in names))
            # Duplicates land at the end of their chunk: a later "version" of the row.
            lines.extend(later)
            handle.write(_encode(lines))
            written += len(lines)
            report("product", end, n)
    return written, captured
