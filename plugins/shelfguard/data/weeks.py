"""Later weeks of one generated store: ``generate(..., week=N)``.

Week 1 is what ``generate`` always wrote for a seed. Week N+1 is the same store a week
later, so that deliveries can be landed one after another like a real shop's:

- its ``product.csv`` is week N's catalog with week N's change feed applied (edited
  rows replaced, new products added, deleted ones gone), and it draws a change feed
  of its own for the end of the week;
- its searches happen after week N's change feed, on the products listed then, by the
  same shoppers (same user ids and e-mails), from the same hidden query intents and
  popularity; search, session and change ids continue after week N's, so no id ever
  repeats an earlier week's;
- its golden set is the same queries (``query.csv`` unchanged); ``label.csv`` keeps
  every earlier judgement (same ids) except those of deleted products, and adds one
  for each new product that is relevant to a golden query (graded by the same hidden
  truth).

Each week's numbers come from random streams of its own, so week N's files are the
same whichever week is generated after it, and the same arguments give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from shelfguard.data import generator as g

#: Weeks are a search window followed by the change feed's window.
WEEK_LENGTH = g._SEARCH_WINDOW + g._CHANGE_WINDOW
MAX_WEEK = 520


@dataclass(frozen=True)
class _Week:
    """Everything needed to write one week's files, and to draw the next week."""

    number: int
    catalog: g._Catalog  # hidden attributes of every product ever listed (id = index)
    listed: npt.NDArray[np.bool_]  # listed during this week's searches
    rows: dict[int, list[str]]  # clean product.csv fields of each listed product
    labels: list[tuple[int, int, int, str]]  # (id, query_id, product_id, label)
    queries: g._Queries
    plan: g._ChangePlan  # the change feed at the end of this week
    feed: g._Feed
    feed_rng: np.random.Generator
    window_start: datetime
    first_search: int
    first_change: int
    users: tuple[list[str], list[str]]
    streams: g._Streams


def validate_week(week: int, defects: Sequence[str]) -> int:
    """``week`` checked: an integer from 1 to ``MAX_WEEK``; defects only in week 1."""
    if isinstance(week, bool) or not isinstance(week, int) or not 1 <= week <= MAX_WEEK:
        raise ValueError(f"week must be an integer from 1 to {MAX_WEEK}, got {week!r}")
    if week > 1 and defects:
        raise ValueError(
            "defects are injected into week 1 only (later weeks continue a clean store); "
            f"got week {week} with {', '.join(defects)}"
        )
    return week


def _first_week(products: int, seed: int, n_searches: int) -> _Week:
    """Week 1's hidden state, replayed from the same streams ``generate`` writes it from."""
    streams, catalog, plan, queries = g._draw_store(products, seed, n_searches, False)
    text = streams.python("text")
    rows = {
        row.product_id: g._clean_fields(row, text, plan)
        for row in g._catalog_rows(catalog, 0, catalog.size_of_catalog)
    }
    labels = [
        (i, query_id, pid, label)
        for i, (query_id, pid, label) in enumerate(g._judgements(catalog, plan, queries, streams))
    ]
    users = g._user_columns(g._shoppers(n_searches), streams.numpy("users"))
    feed, feed_rng = g._draw_feed(plan, rows, catalog.size_of_catalog, streams)
    return _Week(
        number=1,
        catalog=catalog,
        listed=np.ones(catalog.size_of_catalog, dtype=np.bool_),
        rows=rows,
        labels=labels,
        queries=queries,
        plan=plan,
        feed=feed,
        feed_rng=feed_rng,
        window_start=g.first_window(seed),
        first_search=0,
        first_change=0,
        users=users,
        streams=streams,
    )


def _extended(catalog: g._Catalog, added: g._Attributes) -> g._Catalog:
    """``catalog`` with the products of ``added`` appended (ids continue)."""
    names = [f for f in g._Attributes.__dataclass_fields__]
    return g._catalog_of(
        g._Attributes(
            **{n: np.concatenate([getattr(catalog, n), getattr(added, n)]) for n in names}
        )
    )


def _listed_only(catalog: g._Catalog, ids: npt.NDArray[np.int64]) -> g._Catalog:
    """A catalog of products ``ids`` only (its index k is product ``ids[k]``)."""
    names = [f for f in g._Attributes.__dataclass_fields__]
    return g._catalog_of(g._Attributes(**{n: getattr(catalog, n)[ids] for n in names}))


def _next_week(week: _Week, seed: int, n_searches: int) -> _Week:
    """The week after ``week``: its change feed applied, a new feed drawn."""
    feed = week.feed
    first_new = week.catalog.size_of_catalog
    catalog = _extended(week.catalog, feed.added)
    gone = set(feed.deleted)
    rows = {pid: fields for pid, fields in week.rows.items() if pid not in gone}
    rows.update(feed.updated)
    new_ids = list(range(first_new, first_new + len(feed.added_fields)))
    rows.update(zip(new_ids, feed.added_fields, strict=True))
    listed = np.zeros(catalog.size_of_catalog, dtype=np.bool_)
    listed[list(rows)] = True

    labels = [label for label in week.labels if label[2] not in gone]
    next_id = max((label[0] for label in week.labels), default=-1) + 1
    new = np.array(new_ids, dtype=np.int64)
    for query_id, q in enumerate(week.queries.golden):
        wanted = {k: v[q] for k, v in week.queries.columns.items()}
        for pid, grade in zip(new.tolist(), g._grades(catalog, new, wanted).tolist(), strict=True):
            if grade > 0:
                labels.append((next_id, query_id, pid, g._LABEL_NAMES[grade]))
                next_id += 1

    number = week.number + 1
    streams = g._Streams(seed, week=number)
    plan = g._plan_changes(listed, streams.numpy("changes"), text_is_data=False)
    next_feed, feed_rng = g._draw_feed(plan, rows, catalog.size_of_catalog, streams)
    return _Week(
        number=number,
        catalog=catalog,
        listed=listed,
        rows=rows,
        labels=labels,
        queries=week.queries,
        plan=plan,
        feed=next_feed,
        feed_rng=feed_rng,
        window_start=week.window_start + WEEK_LENGTH,
        first_search=week.first_search + n_searches,
        first_change=week.first_change + len(feed.entries),
        users=week.users,
        streams=streams,
    )


def store_week(products: int, seed: int, n_searches: int, week: int) -> _Week:
    """The hidden state of week ``week`` of the store (week 1 replayed, then evolved)."""
    state = _first_week(products, seed, n_searches)
    while state.number < week:
        state = _next_week(state, seed, n_searches)
    return state


def write_week(
    files: dict[str, Path],
    products: int,
    seed: int,
    n_searches: int,
    week: int,
    report: g.ProgressCallback,
) -> dict[str, int]:
    """Write week ``week`` (2 or later) of the store into ``files``; return row counts."""
    state = store_week(products, seed, n_searches, week)
    rows: dict[str, int] = {}
    ids = sorted(state.rows)
    with g._atomic_writer(files["product"]) as handle:
        handle.write(g._header(g.PRODUCT_COLUMNS))
        for begin in range(0, len(ids), g._CHUNK_ROWS):
            chunk = ids[begin : begin + g._CHUNK_ROWS]
            handle.write(g._encode(["\t".join(state.rows[pid]) for pid in chunk]))
            report("product", begin + len(chunk), len(ids))
    rows["product"] = len(ids)
    rows["query"] = g._write_queries(files["query"], state.queries)
    report("query", rows["query"], rows["query"])
    with g._atomic_writer(files["label"]) as handle:
        handle.write(g._header(g.LABEL_COLUMNS))
        handle.write(g._encode([f"{i}\t{qid}\t{pid}\t{lab}" for i, qid, pid, lab in state.labels]))
    rows["label"] = len(state.labels)
    report("label", rows["label"], rows["label"])

    listed_ids = np.flatnonzero(state.listed).astype(np.int64)
    catalog = _listed_only(state.catalog, listed_ids)
    pool, count = g._exact_pools(catalog, state.queries.intents, state.streams.numpy("popularity"))
    queries = replace(state.queries, exact_pool=pool, exact_count=count)
    rows["search_log"] = g._write_search_log(
        files["search_log"],
        catalog,
        queries,
        n_searches,
        state.window_start,
        (),
        state.streams,
        report,
        g._LaterWeek(
            first_search=state.first_search,
            first_session=state.first_search,
            users=state.users,
            product_ids=listed_ids,
        ),
    )
    rows["catalog_changes"] = g._write_changes(
        files["catalog_changes"],
        state.feed,
        state.feed_rng,
        state.window_start + g._SEARCH_WINDOW,
        state.first_change,
    )
    report("catalog_changes", rows["catalog_changes"], rows["catalog_changes"])
    return rows


def truth_of_week(products: int, seed: int, n_searches: int, week: int) -> g.StoreTruth:
    """The hidden truth shoppers of week ``week`` search: the products listed that week
    and not deleted by its feed, graded by the store's intents."""
    state = store_week(products, seed, n_searches, week)
    return g.StoreTruth(
        catalog=state.catalog, queries=state.queries, deleted=~state.listed | state.plan.deleted
    )
