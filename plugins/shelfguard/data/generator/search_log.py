"""The search log: sessions of shoppers, a noisy ranker's ten results per search, and
the click model's clicks, carts and purchases, streamed to search_log.csv."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.catalog import IntArray, _Catalog
from shelfguard.data.generator.clicks import click_outcomes
from shelfguard.data.generator.defects import _DEFECT_RATES
from shelfguard.data.generator.files import (
    _CHUNK_ROWS,
    ProgressCallback,
    _atomic_writer,
    _encode,
    _header,
)
from shelfguard.data.generator.judgements import _grades
from shelfguard.data.generator.queries import _EXACT_POOL, _Queries
from shelfguard.data.generator.streams import _Streams
from shelfguard.data.generator.vocabulary import (
    _FIRST_NAMES,
    _LAST_NAMES,
    _SIBLING_COUNT,
    _SIBLING_TABLE,
)
from shelfguard.data.wands import SEARCH_LOG_COLUMNS

_IMPRESSIONS_PER_SEARCH = 10
_RANKER_NOISE = 0.9
# Where the noisy ranker's candidates come from: exact matches, same class, sibling class,
# anywhere in the catalog.
_CANDIDATE_SOURCES = np.array([0.35, 0.30, 0.15, 0.20])

_SEARCH_WINDOW = timedelta(days=28)
_SEARCH_CHUNK = _CHUNK_ROWS // _IMPRESSIONS_PER_SEARCH


@dataclass(frozen=True)
class _SearchPlan:
    """Per-search columns, already in search_id (time) order."""

    query: IntArray
    user: IntArray
    session: IntArray
    at: npt.NDArray[np.int64]  # seconds since the start of the window


def _plan_searches(
    queries: _Queries, n_searches: int, chosen: tuple[str, ...], streams: _Streams
) -> tuple[_SearchPlan, int]:
    rng = streams.numpy("searches")
    n_users = _shoppers(n_searches)
    sizes = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1], size=n_searches)
    session = np.repeat(np.arange(n_searches), sizes)[:n_searches]
    n_sessions = int(session[-1]) + 1
    first = np.searchsorted(session, np.arange(n_sessions))
    starts = rng.integers(0, int(_SEARCH_WINDOW.total_seconds()) - 3_600, size=n_sessions)
    gaps = rng.integers(15, 240, size=n_searches)
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    at = starts[session] + elapsed - elapsed[first[session]]
    user = rng.integers(n_users, size=n_sessions)[session]
    query = rng.choice(queries.n_train, size=n_searches, p=queries.popularity)
    if "golden_leak" in chosen:
        leak_rng = streams.numpy("golden_leak")
        n_leaked = max(6, round(n_searches * _DEFECT_RATES["golden_leak"]))
        leaked = leak_rng.choice(n_searches, size=n_leaked, replace=False)
        # A few golden queries, each searched by many users: spread thinly, the leak would
        # be dropped by the k-anonymity filter before the training-data gate could see it.
        n_golden = len(queries.golden)
        n_sources = max(1, min(10, n_golden // 10, n_leaked // 12))
        sources = leak_rng.choice(n_golden, size=n_sources, replace=False)
        query[leaked] = queries.n_train + sources[np.arange(n_leaked) % n_sources]
    order = np.lexsort((np.arange(n_searches), at))
    plan = _SearchPlan(query=query[order], user=user[order], session=session[order], at=at[order])
    return plan, n_users


def _shoppers(n_searches: int) -> int:
    """How many shoppers (user ids) make ``n_searches`` searches."""
    return max(50, n_searches // 6)


def _user_columns(n_users: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    first = rng.integers(len(_FIRST_NAMES), size=n_users).tolist()
    last = rng.integers(len(_LAST_NAMES), size=n_users).tolist()
    width = max(6, len(str(n_users)))
    ids = [f"u{u:0{width}d}" for u in range(n_users)]
    emails = [
        f"{_FIRST_NAMES[f]}.{_LAST_NAMES[g]}{u}@example.com"
        for u, (f, g) in enumerate(zip(first, last, strict=True))
    ]
    return ids, emails


def _candidates(
    catalog: _Catalog, queries: _Queries, q: IntArray, rng: np.random.Generator
) -> IntArray:
    """Ten distinct products per search from the noisy ranker's candidate sources."""
    shape = (q.size, _IMPRESSIONS_PER_SEARCH)
    n = catalog.size_of_catalog
    source = rng.choice(len(_CANDIDATE_SOURCES), size=shape, p=_CANDIDATE_SOURCES)
    u = rng.random(shape)
    qq = np.broadcast_to(q[:, None], shape)
    exact_count = queries.exact_count[qq]
    exact = queries.exact_pool[qq, np.minimum((u * exact_count).astype(np.int64), _EXACT_POOL - 1)]
    cls = queries.columns["cls"][qq]
    same = catalog.order[_member_slot(catalog, cls, u)]
    sib_cls = _SIBLING_TABLE[cls, (u * _SIBLING_COUNT[cls]).astype(np.int64)]
    has_sibling = (_SIBLING_COUNT[cls] > 0) & (catalog.count[sib_cls] > 0)
    sibling = catalog.order[_member_slot(catalog, sib_cls, rng.random(shape))]
    anywhere = rng.integers(n, size=shape)
    picked = np.select(
        [(source == 0) & (exact_count > 0), source == 1, (source == 2) & has_sibling],
        [exact, same, sibling],
        anywhere,
    ).astype(np.int64)
    return _deduplicate(picked, n, rng)


def _member_slot(catalog: _Catalog, cls: IntArray, u: npt.NDArray[np.float64]) -> IntArray:
    """Index into ``catalog.order`` of a uniform member of each class in ``cls``."""
    slot = catalog.start[cls] + (u * catalog.count[cls]).astype(np.int64)
    # An empty class (possible under category_shift) has no slot; its pick is discarded by
    # the caller, but the index must still be valid.
    return np.minimum(slot, catalog.size_of_catalog - 1)


def _deduplicate(picked: IntArray, n: int, rng: np.random.Generator) -> IntArray:
    """Replace repeated products within a search by random ones until all ten differ."""
    while True:
        order = np.argsort(picked, axis=1, kind="stable")
        ranked = np.take_along_axis(picked, order, axis=1)
        repeated = np.zeros(picked.shape, dtype=np.bool_)
        repeated[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        if not repeated.any():
            return picked
        rows, cols = np.nonzero(repeated)
        picked[rows, order[rows, cols]] = rng.integers(n, size=rows.size)


def _simulate(
    catalog: _Catalog, queries: _Queries, q: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Ranked products and clicked / added_to_cart / purchased flags, one row per search."""
    products = _candidates(catalog, queries, q, rng)
    intents = {k: v[q][:, None] for k, v in queries.columns.items()}
    grade = _grades(catalog, products, intents)
    score = grade + rng.normal(0.0, _RANKER_NOISE, size=grade.shape)
    order = np.argsort(-score, axis=1, kind="stable")
    products = np.take_along_axis(products, order, axis=1)
    grade = np.take_along_axis(grade, order, axis=1)
    clicked, carted, purchased = click_outcomes(grade, rng)
    return products, clicked, carted, purchased


def _write_search_log(
    path: Path,
    catalog: _Catalog,
    queries: _Queries,
    n_searches: int,
    window_start: datetime,
    chosen: tuple[str, ...],
    streams: _Streams,
    report: ProgressCallback,
    later_week: _LaterWeek | None = None,
) -> int:
    """Stream search_log.csv. ``later_week`` places a later week's searches after the
    earlier weeks' (ids, sessions, the same shoppers) on a catalog of its listed products."""
    plan, n_users = _plan_searches(queries, n_searches, chosen, streams)
    if later_week is None:
        user_ids, emails = _user_columns(n_users, streams.numpy("users"))
        first_search = first_session = 0
    else:
        user_ids, emails = later_week.users
        first_search, first_session = later_week.first_search, later_week.first_session
    rng = streams.numpy("clicks")
    ragged = "ragged_rows" in chosen
    ragged_rng = streams.numpy("ragged_search_log")
    base = np.datetime64(window_start.replace(tzinfo=None), "s")
    total = n_searches * _IMPRESSIONS_PER_SEARCH
    written = 0
    with _atomic_writer(path) as handle:
        handle.write(_header(SEARCH_LOG_COLUMNS))
        for begin in range(0, n_searches, _SEARCH_CHUNK):
            end = min(n_searches, begin + _SEARCH_CHUNK)
            q = plan.query[begin:end]
            products, clicked, carted, purchased = _simulate(catalog, queries, q, rng)
            if later_week is not None:
                products = later_week.product_ids[products]
            stamps = np.datetime_as_string(base + plan.at[begin:end], unit="s").tolist()
            prefixes = [
                f"{first_search + begin + k + 1}\ts{first_session + session:07d}\t{user_ids[user]}\t{emails[user]}\t{stamp}Z\t"
                f"{queries.texts[query]}\t"
                for k, (session, user, stamp, query) in enumerate(
                    zip(
                        plan.session[begin:end].tolist(),
                        plan.user[begin:end].tolist(),
                        stamps,
                        q.tolist(),
                        strict=True,
                    )
                )
            ]
            lines = _impression_lines(prefixes, products, clicked, carted, purchased)
            if ragged:
                _make_ragged(lines, ragged_rng)
            handle.write(_encode(lines))
            written += len(lines)
            report("search_log", end * _IMPRESSIONS_PER_SEARCH, total)
    return written


@dataclass(frozen=True)
class _LaterWeek:
    """Where a later week's search log continues the earlier weeks'."""

    first_search: int  # searches (and sessions) of the earlier weeks
    first_session: int
    users: tuple[list[str], list[str]]  # the store's shoppers: ids and e-mails
    product_ids: IntArray  # the week's catalog index -> product id


def _impression_lines(
    prefixes: list[str],
    products: IntArray,
    clicked: IntArray,
    carted: IntArray,
    purchased: IntArray,
) -> list[str]:
    lines: list[str] = []
    for prefix, pids, clicks, carts, buys in zip(
        prefixes,
        products.tolist(),
        clicked.tolist(),
        carted.tolist(),
        purchased.tolist(),
        strict=True,
    ):
        for position, (pid, c, a, b) in enumerate(zip(pids, clicks, carts, buys, strict=True)):
            lines.append(f"{prefix}{pid}\t{position + 1}\t{c}\t{a}\t{b}")
    return lines


def _make_ragged(lines: list[str], rng: np.random.Generator) -> None:
    hit = np.flatnonzero(rng.random(len(lines)) < _DEFECT_RATES["ragged_rows"]).tolist()
    for index in hit:
        if rng.random() < 0.5:
            lines[index] = lines[index].rsplit("\t", 2)[0]
        else:
            lines[index] = lines[index] + "\t1"
