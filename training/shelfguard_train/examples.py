"""Training examples and batches: which click pairs the model learns from, and in what groups.

``build_examples`` turns the train split into (query, positive[, hard negative])
examples; ``build_batches`` groups them so that no query or product repeats within a
batch (a duplicate would be a false in-batch negative); ``validation_examples`` takes
the validation split as it is.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shelfguard_train.config import TrainConfig
from shelfguard_train.data import PAIRS_FILE, PRODUCTS_FILE, DataContractError, Pair, Product

__all__ = ["Example", "build_batches", "build_examples", "validation_examples"]

log = logging.getLogger(__name__)

_HARD_NEGATIVE_POOL = 20


@dataclass(frozen=True)
class Example:
    """One training example: a query, its positive product and an optional negative."""

    query: str
    positive: int
    negative: int | None = None


def build_examples(
    pairs: Sequence[Pair], products: Sequence[Product], config: TrainConfig
) -> list[Example]:
    """Train-split pairs as examples, strongest first per query, optionally with negatives.

    Each query keeps its ``config.max_pairs_per_query`` pairs of highest weight (ties:
    higher grade, then lower product_id), so purchases and often-clicked products are
    what the model learns from. With ``config.shuffle_pairs`` the products are then
    permuted across the examples: every query is taught a random product (the
    deliberately broken challenger).
    """
    known = {p.product_id for p in products}
    unknown = sorted({p.product_id for p in pairs} - known)
    if unknown:
        raise DataContractError(
            f"{PAIRS_FILE}: {len(unknown)} product_id(s) are not in {PRODUCTS_FILE} "
            f"(e.g. {', '.join(map(str, unknown[:5]))})"
        )
    by_query: dict[str, list[Pair]] = defaultdict(list)
    for pair in pairs:
        if pair.split == "train":
            by_query[pair.query].append(pair)
    if not by_query:
        raise DataContractError(f"{PAIRS_FILE}: no rows with split 'train'")
    kept = [
        pair
        for query in sorted(by_query)
        for pair in sorted(by_query[query], key=lambda p: (-p.weight, -p.grade, p.product_id))[
            : config.max_pairs_per_query
        ]
    ]
    rng = np.random.default_rng([config.seed, 1])
    positives = [p.product_id for p in kept]
    if config.shuffle_pairs:
        positives = [positives[i] for i in rng.permutation(len(positives)).tolist()]
    examples = [Example(p.query, positive) for p, positive in zip(kept, positives, strict=True)]
    if config.hard_negatives:
        examples = _with_hard_negatives(examples, pairs, products, rng)
    return examples


def _with_hard_negatives(
    examples: list[Example],
    pairs: Sequence[Pair],
    products: Sequence[Product],
    rng: np.random.Generator,
) -> list[Example]:
    from shelfguard_train.evaluate import bm25_rankings

    by_id = {p.product_id: p for p in products}
    engaged: dict[str, set[int]] = defaultdict(set)
    for pair in pairs:
        engaged[pair.query].add(pair.product_id)
    queries = sorted({e.query for e in examples})
    ranked = bm25_rankings(queries, [p.text for p in products], len(products))
    ranking = dict(zip(queries, ranked.tolist(), strict=True))
    out: list[Example] = []
    missing = 0
    for example in examples:
        positive = by_id[example.positive]
        candidates = [
            products[i].product_id
            for i in ranking[example.query]
            if products[i].product_class != positive.product_class
            and products[i].top_category == positive.top_category
            and products[i].product_id not in engaged[example.query]
        ][:_HARD_NEGATIVE_POOL]
        if candidates:
            negative = candidates[int(rng.integers(len(candidates)))]
            out.append(Example(example.query, example.positive, negative))
        else:
            missing += 1
            out.append(example)
    if missing:
        log.info("no hard negative for %d of %d examples", missing, len(examples))
    return out


def build_batches(
    examples: Sequence[Example], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """Seeded batches of example indices in which no query or product repeats.

    Examples are shuffled with ``(seed, epoch)``; each batch takes the next examples
    that share no query and no product with it, and defers the rest to later batches.
    Batches of one example are dropped: they have no in-batch negative to learn from.
    """
    order = np.random.default_rng([seed, 2, epoch]).permutation(len(examples)).tolist()
    batches: list[list[int]] = []
    while order:
        batch: list[int] = []
        taken: set[object] = set()
        deferred: list[int] = []
        for index in order:
            example = examples[index]
            keys = {("q", example.query), ("p", example.positive)}
            if example.negative is not None:
                keys.add(("p", example.negative))
            if len(batch) < batch_size and not keys & taken:
                batch.append(index)
                taken |= keys
            else:
                deferred.append(index)
        if len(batch) < 2:
            break
        batches.append(batch)
        order = deferred
    return batches


def validation_examples(pairs: Sequence[Pair], known: set[int]) -> list[Example]:
    """The validation split's pairs as examples, for products the catalog knows."""
    return [
        Example(p.query, p.product_id)
        for p in pairs
        if p.split == "validation" and p.product_id in known
    ]
