"""The catalog: the hidden ground truth of every product, held as compact arrays, and
the change plan that says which products the week's change feed touches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.defects import _TEXT_IS_DATA
from shelfguard.data.generator.vocabulary import (
    _BRANDS,
    _CLASS_COLORS,
    _CLASS_INDEX,
    _CLASS_MATERIALS,
    _CLASSES,
    _MODELS,
    _STYLES,
)

IntArray = npt.NDArray[np.int64]

# The class the category_shift defect makes half of the catalog.
_SHIFTED_CLASS = "Area Rugs"


@dataclass(frozen=True)
class _Catalog:
    """Per-product hidden attributes; the product_id is the index."""

    cls: npt.NDArray[np.int16]
    color: npt.NDArray[np.int16]
    material: npt.NDArray[np.int16]
    size: npt.NDArray[np.int16]  # index into the class's sizes, -1 if the class has none
    brand: npt.NDArray[np.int16]
    style: npt.NDArray[np.int16]
    model: npt.NDArray[np.int16]
    price: npt.NDArray[np.float64]
    rating_count: npt.NDArray[np.int32]  # -1 means not rated (empty field)
    average_rating: npt.NDArray[np.float64]
    review_count: npt.NDArray[np.int32]
    order: IntArray  # product ids grouped by class
    start: IntArray
    count: IntArray

    @property
    def size_of_catalog(self) -> int:
        return int(self.cls.shape[0])

    def members(self, cls: int) -> IntArray:
        """All product ids of one class."""
        begin = int(self.start[cls])
        return self.order[begin : begin + int(self.count[cls])]


@dataclass(frozen=True)
class _Attributes:
    cls: IntArray
    color: IntArray
    material: IntArray
    size: IntArray
    brand: IntArray
    style: IntArray
    model: IntArray
    price: npt.NDArray[np.float64]
    rating_count: IntArray
    average_rating: npt.NDArray[np.float64]
    review_count: IntArray


def _draw_classes(n: int, rng: np.random.Generator, shifted: bool) -> IntArray:
    weights = np.array([pc.weight for pc in _CLASSES], dtype=np.float64)
    if not shifted:
        cls = rng.choice(len(_CLASSES), size=n, p=weights / weights.sum())
        if n >= len(_CLASSES):
            # A full assortment even in small catalogs, so every class has an Exact product.
            cls[rng.permutation(n)[: len(_CLASSES)]] = np.arange(len(_CLASSES))
        return cls
    # Exactly half the catalog becomes one class; the rest keeps the usual mix. Classes
    # may go missing in small catalogs, which is part of the defect: intents are only
    # drawn for classes that have products.
    target = _CLASS_INDEX[_SHIFTED_CLASS]
    weights[target] = 0.0
    cls = rng.choice(len(_CLASSES), size=n, p=weights / weights.sum())
    cls[rng.choice(n, size=n // 2, replace=False)] = target
    return cls


def _draw_attributes(n: int, rng: np.random.Generator, shifted: bool) -> _Attributes:
    """Draw the hidden attributes of ``n`` products (vectorised, one class at a time)."""
    cls = _draw_classes(n, rng, shifted)
    color = np.zeros(n, dtype=np.int64)
    material = np.zeros(n, dtype=np.int64)
    size = np.full(n, -1, dtype=np.int64)
    low = np.zeros(n)
    high = np.zeros(n)
    for index, pc in enumerate(_CLASSES):
        members = np.flatnonzero(cls == index)
        color[members] = rng.choice(_CLASS_COLORS[index], size=members.size)
        material[members] = rng.choice(_CLASS_MATERIALS[index], size=members.size)
        if pc.sizes:
            size[members] = rng.integers(len(pc.sizes), size=members.size)
        low[members], high[members] = pc.price
    brand_weights = 1.0 / np.arange(1, len(_BRANDS) + 1) ** 0.6
    price = low * (high / low) ** rng.random(n)
    rated = rng.random(n) >= 0.22
    rating_count = np.where(rated, np.floor(rng.lognormal(2.3, 1.3, n)).astype(np.int64) + 1, -1)
    average = np.round(np.clip(rng.normal(4.3, 0.55, n), 1.0, 5.0), 1).astype(np.float64)
    review_count = np.where(rated, np.floor(rating_count * rng.beta(2.0, 3.0, n)), -1)
    return _Attributes(
        cls=cls,
        color=color,
        material=material,
        size=size,
        brand=rng.choice(len(_BRANDS), size=n, p=brand_weights / brand_weights.sum()),
        style=rng.integers(len(_STYLES), size=n),
        model=rng.integers(len(_MODELS), size=n),
        price=np.maximum(np.round(price) - 0.01, 4.99),
        rating_count=rating_count,
        average_rating=average,
        review_count=review_count.astype(np.int64),
    )


def _build_catalog(n: int, rng: np.random.Generator, shifted: bool) -> _Catalog:
    return _catalog_of(_draw_attributes(n, rng, shifted))


def _catalog_of(attrs: _Attributes) -> _Catalog:
    """The catalog of products 0..n-1 holding ``attrs``, grouped by class."""
    cls = attrs.cls.astype(np.int16)
    count = np.bincount(cls, minlength=len(_CLASSES)).astype(np.int64)
    return _Catalog(
        cls=cls,
        color=attrs.color.astype(np.int16),
        material=attrs.material.astype(np.int16),
        size=attrs.size.astype(np.int16),
        brand=attrs.brand.astype(np.int16),
        style=attrs.style.astype(np.int16),
        model=attrs.model.astype(np.int16),
        price=attrs.price,
        rating_count=attrs.rating_count.astype(np.int32),
        average_rating=attrs.average_rating,
        review_count=attrs.review_count.astype(np.int32),
        order=np.argsort(cls, kind="stable").astype(np.int64),
        start=np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64),
        count=count,
    )


@dataclass(frozen=True)
class _ChangePlan:
    """Which products the change feed updates or deletes, and which text-is-data rows exist."""

    updated: IntArray
    deleted_ids: IntArray
    deleted: npt.NDArray[np.bool_]
    new_products: int
    text_is_data: dict[int, int]  # product id -> index into _TEXT_IS_DATA


def _plan_changes(
    listed: npt.NDArray[np.bool_], rng: np.random.Generator, text_is_data: bool = True
) -> _ChangePlan:
    """The change feed at the end of a week: about 1% of the ``listed`` products touched
    (updated or deleted) and new products added; with ``text_is_data`` (week 1), which
    rows carry the text-is-data cases."""
    n = listed.size
    ids = np.flatnonzero(listed)
    total = max(6, round(ids.size * 0.01))
    n_deleted = max(1, total * 15 // 100)
    n_new = max(1, total * 15 // 100)
    touched = rng.choice(ids, size=total - n_new, replace=False).astype(np.int64)
    deleted = np.zeros(n, dtype=np.bool_)
    deleted[touched[:n_deleted]] = True
    odd_rows: list[int] = (
        rng.choice(n, size=len(_TEXT_IS_DATA), replace=False).tolist() if text_is_data else []
    )
    return _ChangePlan(
        updated=np.sort(touched[n_deleted:]),
        deleted_ids=np.sort(touched[:n_deleted]),
        deleted=deleted,
        new_products=n_new,
        text_is_data={int(pid): k for k, pid in enumerate(odd_rows)},
    )
