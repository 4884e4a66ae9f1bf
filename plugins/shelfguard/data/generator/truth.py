"""The store's hidden truth for the simulated shoppers: what each query means and how
relevant each product is to it (``store_truth``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.catalog import IntArray, _Catalog
from shelfguard.data.generator.judgements import _grades
from shelfguard.data.generator.queries import _Queries
from shelfguard.data.generator.store import _draw_store, _validate, default_searches


@dataclass(frozen=True)
class StoreTruth:
    """The hidden ground truth of the store ``generate`` draws with the same arguments:
    what each query means and how relevant each product is to it."""

    catalog: _Catalog
    queries: _Queries
    deleted: npt.NDArray[np.bool_]

    @property
    def training_queries(self) -> int:
        """How many queries shoppers search (the golden ones are not searched)."""
        return self.queries.n_train

    def sample_queries(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` query indices drawn by popularity, as the generator's shoppers draw them."""
        return rng.choice(self.queries.n_train, size=n, p=self.queries.popularity)

    def text(self, query: int) -> str:
        """What shoppers type for query ``query``."""
        return self.queries.texts[query]

    def grades(self, query: int, product_ids: Sequence[int]) -> IntArray:
        """2 Exact / 1 Partial / 0 Irrelevant of each product for the query; a product the
        hidden catalog does not hold (added by the change feed) counts as Irrelevant."""
        ids = np.asarray(product_ids, dtype=np.int64)
        known = (ids >= 0) & (ids < self.catalog.size_of_catalog)
        wanted = {k: v[query] for k, v in self.queries.columns.items()}
        out = np.zeros(ids.shape, dtype=np.int64)
        if known.any():
            out[known] = _grades(self.catalog, ids[known], wanted)
        return out

    def judgements(self, query: int) -> dict[int, int]:
        """Every listed (not deleted) product with a gain for the query -> its grade: the
        complete judgements the served rankings are scored against."""
        listed = np.flatnonzero(~self.deleted)
        grades = self.grades(query, listed.tolist())
        relevant = grades > 0
        return dict(zip(listed[relevant].tolist(), grades[relevant].tolist(), strict=True))


def store_truth(
    products: int = 2000, seed: int = 42, searches: int | None = None, week: int = 1
) -> StoreTruth:
    """The ground truth behind ``generate(out, products, seed, searches=searches,
    week=week)``."""
    from shelfguard.data import weeks

    _validate(products, seed, (), searches)
    weeks.validate_week(week, ())
    n_searches = default_searches(products) if searches is None else searches
    if week > 1:
        return weeks.truth_of_week(products, seed, n_searches, week)
    _, catalog, plan, queries = _draw_store(products, seed, n_searches, False)
    return StoreTruth(catalog=catalog, queries=queries, deleted=plan.deleted)
