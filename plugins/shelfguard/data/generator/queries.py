"""Queries: hidden intents drawn from the catalog and rendered in the store's own
vocabulary (house terms, shorthand, misspellings); the golden ones go to query.csv."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.catalog import IntArray, _Catalog
from shelfguard.data.generator.files import _atomic_writer, _encode, _header
from shelfguard.data.generator.streams import _Streams
from shelfguard.data.generator.vocabulary import (
    _ABBREVIATIONS,
    _BRANDS,
    _CLASSES,
    _COLORS,
    _MATERIALS,
    _MISSPELLINGS,
)
from shelfguard.data.wands import QUERY_COLUMNS

# How many Exact products of each query are kept for the search log's ranker to draw from.
_EXACT_POOL = 32

# Query rendering: how often each kind of store vocabulary is used.
_P_HOUSE_TERM = 0.15
_P_ABBREVIATE = 0.2
_P_TYPO = 0.12
_P_NOUN_FIRST = 0.15
_ZIPF_EXPONENT = 0.85
_CONSTRAINT_PROBABILITIES = {"color": 0.4, "material": 0.3, "size": 0.25, "brand": 0.07}


class _Intent(NamedTuple):
    """What a shopper wants: a class and optional constraints (-1 = no constraint)."""

    cls: int
    color: int
    material: int
    size: int
    brand: int


@dataclass(frozen=True)
class _Queries:
    """Training queries (search logs) followed by golden queries (query.csv)."""

    texts: list[str]
    intents: list[_Intent]
    columns: dict[str, IntArray]  # the intents as one array per _Intent field
    n_train: int
    popularity: npt.NDArray[np.float64]  # search probability of each training query
    exact_pool: IntArray  # (queries, _EXACT_POOL) sample of Exact product ids
    exact_count: IntArray

    @property
    def golden(self) -> range:
        return range(self.n_train, len(self.texts))


def _misspell(token: str, rnd: random.Random) -> str:
    if token in _MISSPELLINGS and rnd.random() < 0.6:
        return _MISSPELLINGS[token]
    i = rnd.randrange(1, len(token) - 1)
    edit = rnd.randrange(3)
    if edit == 0:
        return token[:i] + token[i + 1] + token[i] + token[i + 2 :]
    if edit == 1:
        return token[:i] + token[i + 1 :]
    return token[:i] + token[i] + token[i:]


def _render_query(intent: _Intent, rnd: random.Random) -> tuple[str, int]:
    """Turn a hidden intent into text the way shoppers type it; also count the typos."""
    pc = _CLASSES[intent.cls]
    use_house_term = rnd.random() < _P_HOUSE_TERM
    noun = rnd.choice(pc.house_terms if use_house_term else pc.nouns)
    attributes = []
    if intent.size >= 0:
        attributes.append(pc.sizes[intent.size][1].lower().replace("-", " "))
    if intent.color >= 0:
        attributes.append(_COLORS[intent.color].lower())
    if intent.material >= 0:
        attributes.append(_MATERIALS[intent.material].lower())
    if rnd.random() < _P_ABBREVIATE:
        attributes = [_ABBREVIATIONS.get(word, word) for word in attributes]
    words = [noun, *attributes] if rnd.random() < _P_NOUN_FIRST else [*attributes, noun]
    if intent.brand >= 0:
        words.insert(0, _BRANDS[intent.brand].lower())
    tokens = " ".join(words).split()
    typos = 0
    for i, token in enumerate(tokens):
        if len(token) >= 4 and token.isalpha() and rnd.random() < _P_TYPO:
            tokens[i] = _misspell(token, rnd)
            typos += 1
    return " ".join(tokens), typos


class _IntentSampler:
    """Intents anchored on real, not deleted products, so each has at least one Exact."""

    def __init__(self, catalog: _Catalog, deleted: npt.NDArray[np.bool_]) -> None:
        self.catalog = catalog
        self.alive = [m[~deleted[m]] for m in (catalog.members(c) for c in range(len(_CLASSES)))]
        # Demand follows the store's usual mix, whatever the catalog currently holds.
        demand = np.array([pc.weight for pc in _CLASSES]) * [m.size > 0 for m in self.alive]
        self.classes = list(range(len(_CLASSES)))
        self.cumulative = np.cumsum(demand / demand.sum()).tolist()

    def sample(self, rnd: random.Random) -> _Intent:
        cls = rnd.choices(self.classes, cum_weights=self.cumulative)[0]
        members = self.alive[cls]
        anchor = int(members[rnd.randrange(members.size)])
        cat = self.catalog
        picks = {key: rnd.random() < p for key, p in _CONSTRAINT_PROBABILITIES.items()}
        return _Intent(
            cls=cls,
            color=int(cat.color[anchor]) if picks["color"] else -1,
            material=int(cat.material[anchor]) if picks["material"] else -1,
            size=int(cat.size[anchor]) if picks["size"] else -1,
            brand=int(cat.brand[anchor]) if picks["brand"] else -1,
        )


def _query_counts(products: int, n_searches: int) -> tuple[int, int]:
    """(distinct training query texts, golden queries)."""
    n_train = min(max(200, n_searches // 8), 25_000)
    n_golden = min(200, max(20, products // 10))
    return n_train, n_golden


def _sample_queries(
    sampler: _IntentSampler,
    wanted: int,
    rnd: random.Random,
    taken_texts: set[str],
    taken_intents: set[_Intent] | None,
) -> tuple[list[str], list[_Intent], list[int]]:
    """Draw distinct texts; with ``taken_intents``, also distinct and unseen intents.

    Returns the texts, their intents and how many typos each text has.
    """
    texts: list[str] = []
    intents: list[_Intent] = []
    typo_counts: list[int] = []
    attempts = 0
    while len(texts) < wanted:
        attempts += 1
        if attempts > 200 * wanted + 10_000:
            raise RuntimeError(f"could not draw {wanted} distinct queries from the catalog")
        intent = sampler.sample(rnd)
        if taken_intents is not None:
            if intent in taken_intents:
                continue
            taken_intents.add(intent)
        text, typos = _render_query(intent, rnd)
        if text in taken_texts:
            continue
        taken_texts.add(text)
        texts.append(text)
        intents.append(intent)
        typo_counts.append(typos)
    return texts, intents, typo_counts


def _exact_mask(catalog: _Catalog, ids: IntArray, intent: _Intent) -> npt.NDArray[np.bool_]:
    mask = np.ones(ids.shape, dtype=np.bool_)
    for attr, wanted in (
        (catalog.color, intent.color),
        (catalog.material, intent.material),
        (catalog.size, intent.size),
        (catalog.brand, intent.brand),
    ):
        if wanted >= 0:
            mask &= attr[ids] == wanted
    return mask


def _intent_arrays(intents: Sequence[_Intent]) -> dict[str, IntArray]:
    return {
        field: np.array([getattr(i, field) for i in intents], dtype=np.int64)
        for field in _Intent._fields
    }


def _build_queries(
    catalog: _Catalog, deleted: npt.NDArray[np.bool_], n_searches: int, streams: _Streams
) -> _Queries:
    n_train, n_golden = _query_counts(catalog.size_of_catalog, n_searches)
    sampler = _IntentSampler(catalog, deleted)
    taken: set[str] = set()
    texts, intents, typos = _sample_queries(
        sampler, n_train, streams.python("queries"), taken, None
    )
    # Golden intents differ from every training intent, so evaluation measures generalisation.
    golden_texts, golden_intents, _ = _sample_queries(
        sampler, n_golden, streams.python("golden"), taken, set(intents)
    )

    rng = streams.numpy("popularity")
    # Short, correctly spelled queries are the popular head; long specific ones and
    # misspellings the tail (Zipf-like).
    constraints = np.array([sum(v >= 0 for v in intent[1:]) for intent in intents], dtype=float)
    key = constraints + np.array(typos, dtype=float) + 1.5 * rng.random(n_train)
    rank = np.argsort(np.argsort(key, kind="stable"), kind="stable")
    popularity = 1.0 / (rank + 1.0) ** _ZIPF_EXPONENT

    all_intents = intents + golden_intents
    pool, count = _exact_pools(catalog, all_intents, rng)
    return _Queries(
        texts=texts + golden_texts,
        intents=all_intents,
        columns=_intent_arrays(all_intents),
        n_train=n_train,
        popularity=popularity / popularity.sum(),
        exact_pool=pool,
        exact_count=count,
    )


def _exact_pools(
    catalog: _Catalog, intents: Sequence[_Intent], rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Up to ``_EXACT_POOL`` Exact products of each intent, and how many there are."""
    pool = np.zeros((len(intents), _EXACT_POOL), dtype=np.int64)
    count = np.zeros(len(intents), dtype=np.int64)
    for q, intent in enumerate(intents):
        members = catalog.members(intent.cls)
        exact = members[_exact_mask(catalog, members, intent)]
        if exact.size > _EXACT_POOL:
            exact = rng.choice(exact, size=_EXACT_POOL, replace=False)
        pool[q, : exact.size] = exact
        count[q] = exact.size
    return pool, count


def _write_queries(path: Path, queries: _Queries) -> int:
    lines = [
        f"{query_id}\t{queries.texts[q]}\t{_CLASSES[queries.intents[q].cls].name}"
        for query_id, q in enumerate(queries.golden)
    ]
    with _atomic_writer(path) as handle:
        handle.write(_header(QUERY_COLUMNS))
        handle.write(_encode(lines))
    return len(lines)
