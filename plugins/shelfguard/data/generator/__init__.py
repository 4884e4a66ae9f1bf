"""Synthetic store data in the WANDS layout, with a hidden ground truth and switchable defects.

``generate()`` writes five tab-separated files for a made-up furniture-and-home store:
the catalog (``product.csv``), the golden queries and their judgements (``query.csv``,
``label.csv``, the WANDS layout), impression-level search logs (``search_log.csv``) and a
catalog change feed (``catalog_changes.csv``).

Every product is drawn from a hidden ground truth: a product class (with a category path
whose parent groups close siblings), a colour, a material, an optional class-specific
size and a house brand. Every query is rendered from a hidden intent over the same
attributes, in the store's own vocabulary: in-house names for product types that never
appear in product text ("snuggler" for a loveseat), abbreviations ("blk", "qn", "ss"),
house brands and misspellings. Judgements and clicks both derive from that truth, so a
model fine-tuned on the click logs can learn the vocabulary and be measured on the golden
set, which uses different query texts and intents than the logs.

Nothing is read from disk but the store's vocabulary (``vocabulary.json``, in this
package) and nothing depends on the clock: the same arguments give byte-identical files.
Defects (see ``DEFECTS``) inject the faults the ingest contract and the Great
Expectations gates must catch.
"""

# The rooms: vocabulary (the store's words, read from vocabulary.json), catalog (the hidden
# products and the change plan), products, queries, judgements, search_log and clicks
# (the click model), changes (the feed), files (names, columns, writing), defects,
# streams (the random streams), store (generate) and truth (store_truth).
from shelfguard.data.generator.clicks import click_outcomes, examination
from shelfguard.data.generator.defects import DEFECTS
from shelfguard.data.generator.store import (
    MIN_PRODUCTS,
    MIN_SEARCHES,
    GenerateResult,
    default_searches,
    generate,
)
from shelfguard.data.generator.truth import StoreTruth, store_truth
from shelfguard.data.wands import (
    CHANGE_COLUMNS,
    FILES,
    LABEL_COLUMNS,
    PRODUCT_COLUMNS,
    QUERY_COLUMNS,
    SEARCH_LOG_COLUMNS,
)

# isort: split
# The internals shelfguard.data.weeks draws the later weeks of a store from (it reads
# them as ``generator.<name>``), and the product classes the tests inspect.
from shelfguard.data.generator.catalog import _Attributes as _Attributes
from shelfguard.data.generator.catalog import _Catalog as _Catalog
from shelfguard.data.generator.catalog import _catalog_of as _catalog_of
from shelfguard.data.generator.catalog import _ChangePlan as _ChangePlan
from shelfguard.data.generator.catalog import _plan_changes as _plan_changes
from shelfguard.data.generator.changes import _CHANGE_WINDOW as _CHANGE_WINDOW
from shelfguard.data.generator.changes import _draw_feed as _draw_feed
from shelfguard.data.generator.changes import _Feed as _Feed
from shelfguard.data.generator.changes import _write_changes as _write_changes
from shelfguard.data.generator.files import _CHUNK_ROWS as _CHUNK_ROWS
from shelfguard.data.generator.files import ProgressCallback as ProgressCallback
from shelfguard.data.generator.files import _atomic_writer as _atomic_writer
from shelfguard.data.generator.files import _encode as _encode
from shelfguard.data.generator.files import _header as _header
from shelfguard.data.generator.judgements import _LABEL_NAMES as _LABEL_NAMES
from shelfguard.data.generator.judgements import _grades as _grades
from shelfguard.data.generator.judgements import _judgements as _judgements
from shelfguard.data.generator.products import _catalog_rows as _catalog_rows
from shelfguard.data.generator.products import _clean_fields as _clean_fields
from shelfguard.data.generator.queries import _exact_pools as _exact_pools
from shelfguard.data.generator.queries import _Queries as _Queries
from shelfguard.data.generator.queries import _write_queries as _write_queries
from shelfguard.data.generator.search_log import _SEARCH_WINDOW as _SEARCH_WINDOW
from shelfguard.data.generator.search_log import _LaterWeek as _LaterWeek
from shelfguard.data.generator.search_log import _shoppers as _shoppers
from shelfguard.data.generator.search_log import _user_columns as _user_columns
from shelfguard.data.generator.search_log import _write_search_log as _write_search_log
from shelfguard.data.generator.store import _draw_store as _draw_store
from shelfguard.data.generator.store import first_window as first_window
from shelfguard.data.generator.streams import _Streams as _Streams
from shelfguard.data.generator.vocabulary import _CLASSES as _CLASSES

__all__ = [
    "CHANGE_COLUMNS",
    "DEFECTS",
    "FILES",
    "LABEL_COLUMNS",
    "MIN_PRODUCTS",
    "MIN_SEARCHES",
    "PRODUCT_COLUMNS",
    "QUERY_COLUMNS",
    "SEARCH_LOG_COLUMNS",
    "GenerateResult",
    "StoreTruth",
    "click_outcomes",
    "default_searches",
    "examination",
    "generate",
    "store_truth",
]
