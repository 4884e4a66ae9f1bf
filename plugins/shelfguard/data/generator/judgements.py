"""The hidden truth's grades (Exact / Partial / Irrelevant) and the golden judgements
of label.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.catalog import IntArray, _Catalog, _ChangePlan
from shelfguard.data.generator.defects import _DEFECT_RATES
from shelfguard.data.generator.files import _atomic_writer, _encode, _header
from shelfguard.data.generator.queries import _exact_mask, _Intent, _intent_arrays, _Queries
from shelfguard.data.generator.streams import _Streams
from shelfguard.data.generator.vocabulary import _PARENT_OF_CLASS, _SIBLINGS
from shelfguard.data.wands import LABEL_COLUMNS

# Ground truth grades: 2 = Exact, 1 = Partial, 0 = Irrelevant.
_LABEL_NAMES = ("Irrelevant", "Partial", "Exact")


def _grades(
    catalog: _Catalog,
    ids: IntArray,
    intents: dict[str, IntArray],
) -> npt.NDArray[np.int64]:
    """2 Exact / 1 Partial / 0 Irrelevant for products ``ids`` against broadcast intents."""
    same_class = catalog.cls[ids] == intents["cls"]
    exact = same_class.copy()
    for field, attr in (
        ("color", catalog.color),
        ("material", catalog.material),
        ("size", catalog.size),
        ("brand", catalog.brand),
    ):
        wanted = intents[field]
        exact &= (wanted < 0) | (attr[ids] == wanted)
    sibling = _PARENT_OF_CLASS[catalog.cls[ids]] == _PARENT_OF_CLASS[intents["cls"]]
    return np.where(exact, 2, np.where(same_class | sibling, 1, 0)).astype(np.int64)


def _judge(
    catalog: _Catalog,
    deleted: npt.NDArray[np.bool_],
    intent: _Intent,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """15-30 shuffled (product id, grade) judgements of products that are not deleted."""
    members = catalog.members(intent.cls)
    members = members[~deleted[members]]
    is_exact = _exact_mask(catalog, members, intent)
    exact = members[is_exact]
    near = np.concatenate(
        [members[~is_exact], *(catalog.members(s) for s in _SIBLINGS[intent.cls])]
    )
    near = near[~deleted[near]]
    # WANDS-like mix: Partials dominate, then Exacts; a few Irrelevants keep nDCG honest.
    target = int(rng.integers(15, 31))
    n_irrelevant = int(rng.integers(3, 8))
    n_exact = min(exact.size, int(rng.integers(5, 15)))
    n_partial = min(near.size, max(4, target - n_exact - n_irrelevant))
    n_irrelevant = max(n_irrelevant, target - n_exact - n_partial)
    chosen_exact = rng.choice(exact, size=n_exact, replace=False)
    chosen_near = rng.choice(near, size=n_partial, replace=False)
    n = catalog.size_of_catalog
    candidates = rng.choice(n, size=min(n, 8 * n_irrelevant + 40), replace=False)
    candidates = candidates[~deleted[candidates]]
    wanted = {k: v[0] for k, v in _intent_arrays([intent]).items()}
    far = candidates[_grades(catalog, candidates, wanted) == 0]
    judged = [(int(p), 2) for p in chosen_exact] + [(int(p), 1) for p in chosen_near]
    judged += [(int(p), 0) for p in far[:n_irrelevant]]
    order = rng.permutation(len(judged))
    return [judged[i] for i in order]


def _judgements(
    catalog: _Catalog, plan: _ChangePlan, queries: _Queries, streams: _Streams
) -> list[tuple[int, int, str]]:
    """label.csv's (query id, product id, label) rows of week 1, in file order."""
    rng = streams.numpy("labels")
    return [
        (query_id, product_id, _LABEL_NAMES[grade])
        for query_id, q in enumerate(queries.golden)
        for product_id, grade in _judge(catalog, plan.deleted, queries.intents[q], rng)
    ]


def _write_labels(
    path: Path,
    catalog: _Catalog,
    plan: _ChangePlan,
    queries: _Queries,
    chosen: tuple[str, ...],
    streams: _Streams,
) -> int:
    rows = _judgements(catalog, plan, queries, streams)
    if "orphan_judgements" in chosen:
        rows = _add_orphans(rows, catalog.size_of_catalog + plan.new_products, streams)
    lines = [f"{i}\t{query_id}\t{pid}\t{label}" for i, (query_id, pid, label) in enumerate(rows)]
    with _atomic_writer(path) as handle:
        handle.write(_header(LABEL_COLUMNS))
        handle.write(_encode(lines))
    return len(lines)


def _add_orphans(
    rows: list[tuple[int, int, str]], first_free_id: int, streams: _Streams
) -> list[tuple[int, int, str]]:
    rng = streams.numpy("orphan_judgements")
    n_orphans = max(3, round(len(rows) * _DEFECT_RATES["orphan_judgements"]))
    out = list(rows)
    # Far above every real and newly added product id, so they can never resolve.
    ghost_ids = first_free_id + 1_000_000 + rng.choice(9_000_000, size=n_orphans, replace=False)
    positions = np.sort(rng.integers(0, len(rows) + 1, size=n_orphans))[::-1]
    for position, ghost in zip(positions.tolist(), ghost_ids.tolist(), strict=True):
        query_id = out[min(position, len(out) - 1)][0]
        out.insert(position, (query_id, ghost, _LABEL_NAMES[int(rng.integers(3))]))
    return out
