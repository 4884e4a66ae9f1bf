"""The store as a whole: ``generate`` checks its arguments, draws week 1's hidden store
and writes its five files; later weeks come from ``shelfguard.data.weeks``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from shelfguard.data.generator.catalog import _build_catalog, _Catalog, _ChangePlan, _plan_changes
from shelfguard.data.generator.changes import _draw_feed, _write_changes
from shelfguard.data.generator.defects import DEFECTS
from shelfguard.data.generator.files import ProgressCallback
from shelfguard.data.generator.judgements import _write_labels
from shelfguard.data.generator.products import _write_products
from shelfguard.data.generator.queries import _build_queries, _Queries, _write_queries
from shelfguard.data.generator.search_log import _SEARCH_WINDOW, _write_search_log
from shelfguard.data.generator.streams import _Streams
from shelfguard.data.wands import FILES

MIN_PRODUCTS = 50
MIN_SEARCHES = 100
_MAX_DEFAULT_SEARCHES = 200_000


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate`` wrote: the folder, each file, its data-row count and the defects."""

    out_dir: Path
    files: dict[str, Path]
    rows: dict[str, int]
    defects: tuple[str, ...]


def default_searches(products: int) -> int:
    """Searches generated when ``searches`` is not given: enough clicks to fine-tune on."""
    return min(max(5_000, 4 * products), _MAX_DEFAULT_SEARCHES)


def generate(
    out_dir: Path,
    products: int = 2000,
    seed: int = 42,
    defects: Sequence[str] = (),
    searches: int | None = None,
    progress: ProgressCallback | None = None,
    week: int = 1,
) -> GenerateResult:
    """Write the five store files into ``out_dir`` and return what was written.

    ``products`` catalog rows (before defects) are drawn from the hidden ground truth;
    ``searches`` searches of ten impressions each go to the log (default:
    ``default_searches(products)``). ``defects`` names entries of ``DEFECTS`` to inject.
    ``progress(stage, done, total)`` is called about every 10,000 rows, ``stage`` being a
    key of ``FILES``. ``week`` N > 1 writes the same store N - 1 weeks later
    (``shelfguard.data.weeks``: the earlier weeks' change feeds applied, ids that never
    repeat an earlier week's). Same arguments, same bytes. Raises ``ValueError`` for bad
    arguments.
    """
    from shelfguard.data import weeks

    chosen = _validate(products, seed, defects, searches)
    weeks.validate_week(week, chosen)
    n_searches = default_searches(products) if searches is None else searches
    report: ProgressCallback = progress if progress is not None else _ignore_progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {key: out / name for key, name in FILES.items()}
    if week > 1:
        written = weeks.write_week(files, products, seed, n_searches, week, report)
        return GenerateResult(out_dir=out, files=files, rows=written, defects=())

    streams, catalog, plan, queries = _draw_store(
        products, seed, n_searches, "category_shift" in chosen
    )
    window_start = first_window(seed)

    rows: dict[str, int] = {}
    rows["product"], captured = _write_products(
        files["product"], catalog, plan, chosen, streams, report
    )
    rows["query"] = _write_queries(files["query"], queries)
    report("query", rows["query"], rows["query"])
    rows["label"] = _write_labels(files["label"], catalog, plan, queries, chosen, streams)
    report("label", rows["label"], rows["label"])
    rows["search_log"] = _write_search_log(
        files["search_log"], catalog, queries, n_searches, window_start, chosen, streams, report
    )
    feed, feed_rng = _draw_feed(plan, captured, catalog.size_of_catalog, streams)
    rows["catalog_changes"] = _write_changes(
        files["catalog_changes"], feed, feed_rng, window_start + _SEARCH_WINDOW
    )
    report("catalog_changes", rows["catalog_changes"], rows["catalog_changes"])
    return GenerateResult(out_dir=out, files=files, rows=rows, defects=chosen)


def _draw_store(
    products: int, seed: int, n_searches: int, shifted: bool
) -> tuple[_Streams, _Catalog, _ChangePlan, _Queries]:
    """Week 1's hidden store: its streams, catalog, change plan and queries."""
    streams = _Streams(seed)
    catalog = _build_catalog(products, streams.numpy("catalog"), shifted)
    plan = _plan_changes(np.ones(catalog.size_of_catalog, dtype=np.bool_), streams.numpy("changes"))
    queries = _build_queries(catalog, plan.deleted, n_searches, streams)
    return streams, catalog, plan, queries


def first_window(seed: int) -> datetime:
    """When week 1's searches of the store drawn from ``seed`` begin."""
    return datetime(2026, 9, 1, tzinfo=UTC) + timedelta(days=seed % 61)


def _ignore_progress(stage: str, done: int, total: int) -> None:
    del stage, done, total


def _validate(
    products: int, seed: int, defects: Sequence[str], searches: int | None
) -> tuple[str, ...]:
    if isinstance(products, bool) or not isinstance(products, int):
        raise ValueError(f"products must be an integer, got {products!r}")
    if products < MIN_PRODUCTS:
        raise ValueError(
            f"products must be at least {MIN_PRODUCTS} (one per product class plus a golden "
            f"set), got {products}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if searches is not None and (
        isinstance(searches, bool) or not isinstance(searches, int) or searches < MIN_SEARCHES
    ):
        raise ValueError(f"searches must be None or an integer >= {MIN_SEARCHES}, got {searches!r}")
    if isinstance(defects, str | bytes):
        raise ValueError(
            f"defects must be a sequence of defect names, not the string {defects!r} "
            f"(did you mean [{defects!r}]?)"
        )
    unknown = [name for name in defects if name not in DEFECTS]
    if unknown:
        raise ValueError(
            f"unknown defect(s): {', '.join(map(repr, unknown))}; known defects: "
            f"{', '.join(DEFECTS)}"
        )
    requested = set(defects)
    return tuple(name for name in DEFECTS if name in requested)
