"""The WANDS file contract: the files a batch is made of, their columns in order, and
the tables and quarantine reasons they land as.

The one place that names the files (:data:`FILES`) and their columns in header order
(:data:`PRODUCT_COLUMNS` and the others, read off :data:`SPECS`): the generator writes
what ingest reads.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The longest data line loaded, in bytes without its terminator; a longer one is
#: quarantined (``line_too_long``). Below DuckDB's own limit (2,000,000 bytes), over which
#: it drops a line without a reject.
MAX_LINE_BYTES = 1024 * 1024


class IngestError(Exception):
    """A file-level problem: the batch is refused and nothing is loaded."""


@dataclass(frozen=True)
class FileSpec:
    """How one source file maps to one raw table."""

    key: str
    file_name: str
    table: str
    columns: dict[str, str]
    required: bool
    #: Personal columns: read and checked like the others, never stored in ``raw.*``.
    personal: tuple[str, ...] = ()
    #: (stored column, personal column): the stored column holds the personal one's
    #: pseudonym (:func:`shelfguard.data.pseudonyms.pseudonym`), in its place.
    pseudonyms: tuple[tuple[str, str], ...] = ()
    #: A file with a header and no data line is refused (a catalog of zero products).
    not_empty: bool = False

    @property
    def stored_columns(self) -> dict[str, str]:
        """The data columns of ``raw.<table>``: the file's, pseudonyms in place of personal ones."""
        replaced = {source: stored for stored, source in self.pseudonyms}
        stored: dict[str, str] = {}
        for name, sql_type in self.columns.items():
            if name in replaced:
                stored[replaced[name]] = "VARCHAR"
            elif name not in self.personal:
                stored[name] = sql_type
        return stored


_PRODUCT_TYPES = {
    "product_id": "BIGINT",
    "product_name": "VARCHAR",
    "product_class": "VARCHAR",
    "category_hierarchy": "VARCHAR",
    "product_description": "VARCHAR",
    "product_features": "VARCHAR",
    # WANDS writes counts as floats ("15.0"); staging casts them to integers.
    "rating_count": "DOUBLE",
    "average_rating": "DOUBLE",
    "review_count": "DOUBLE",
}

SPECS: tuple[FileSpec, ...] = (
    # Not required: a delivery of behaviour alone (the search service's served log) reads
    # the catalog of the published marts. A folder with none of these files is refused.
    FileSpec("product", "product.csv", "products", _PRODUCT_TYPES, required=False, not_empty=True),
    FileSpec(
        "query",
        "query.csv",
        "queries",
        {"query_id": "BIGINT", "query": "VARCHAR", "query_class": "VARCHAR"},
        required=False,
    ),
    FileSpec(
        "label",
        "label.csv",
        "judgements",
        {"id": "BIGINT", "query_id": "BIGINT", "product_id": "BIGINT", "label": "VARCHAR"},
        required=False,
    ),
    FileSpec(
        "search_log",
        "search_log.csv",
        "search_log",
        {
            "search_id": "VARCHAR",
            "session_id": "VARCHAR",
            "user_id": "VARCHAR",
            "user_email": "VARCHAR",
            "searched_at": "TIMESTAMP",
            "query": "VARCHAR",
            "product_id": "BIGINT",
            "position": "INTEGER",
            "clicked": "SMALLINT",
            "added_to_cart": "SMALLINT",
            "purchased": "SMALLINT",
        },
        required=False,
        personal=("user_id", "user_email"),
        pseudonyms=(("user_key", "user_id"),),
    ),
    FileSpec(
        "catalog_changes",
        "catalog_changes.csv",
        "catalog_changes",
        {"change_id": "BIGINT", "changed_at": "TIMESTAMP", "op": "VARCHAR", **_PRODUCT_TYPES},
        required=False,
    ),
)


BLANK_LINE = "blank_line"
LINE_TOO_LONG = "line_too_long"
#: PostgreSQL text cannot store U+0000; the rule is the same on both warehouses.
NUL_CHARACTER = "nul_character"
CONTROL_CHARACTER = "control_character"
STRAY_CARRIAGE_RETURN = "stray_carriage_return"
INVALID_UTF8 = "invalid_utf8"
TOO_FEW_FIELDS = "too_few_fields"
TOO_MANY_FIELDS = "too_many_fields"
UNPARSEABLE_VALUE = "unparseable_value"
MALFORMED_LINE = "malformed_line"


def _columns(key: str) -> list[str]:
    return next(list(spec.columns) for spec in SPECS if spec.key == key)


#: Each file's name by its key.
FILES: dict[str, str] = {spec.key: spec.file_name for spec in SPECS}
#: Each file's columns in header order.
PRODUCT_COLUMNS: list[str] = _columns("product")
QUERY_COLUMNS: list[str] = _columns("query")
LABEL_COLUMNS: list[str] = _columns("label")
SEARCH_LOG_COLUMNS: list[str] = _columns("search_log")
CHANGE_COLUMNS: list[str] = _columns("catalog_changes")

#: The columns after a file's data columns in ``raw.<table>``: where each row came from.
RAW_META = {
    "_line_number": "BIGINT",
    "_batch_id": "VARCHAR",
    "_file_sha256": "VARCHAR",
    "_ingested_at": "TIMESTAMP WITH TIME ZONE",
}
#: The columns of ``quarantine.<table>``: a rejected line, its reason and its bytes.
QUARANTINE_COLUMNS = {
    "batch_id": "VARCHAR",
    "file_name": "VARCHAR",
    "file_sha256": "VARCHAR",
    "line_number": "BIGINT",
    "reason": "VARCHAR",
    "detail": "VARCHAR",
    "original_line": "BLOB",
    "quarantined_at": "TIMESTAMP WITH TIME ZONE",
}
