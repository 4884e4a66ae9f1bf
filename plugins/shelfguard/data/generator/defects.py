"""The defects ``generate`` can inject, their rates, and the hostile-but-valid text.

Each defect is applied where its file is written (products, labels, search log); this
module only names them and says how often they strike.
"""

from __future__ import annotations

DEFECTS: dict[str, str] = {
    "duplicate_ids": "product.csv repeats 3% of product_ids as a later row with changed text",
    "empty_names": "3% of product.csv rows have an empty product_name",
    "bad_numbers": "3% of product.csv rows have an unparseable rating/review number",
    "out_of_range": "3% of product.csv rows have an impossible rating or negative count",
    "schema_missing": "product.csv lacks the product_class column",
    "schema_renamed": "product.csv calls product_name product_title",
    "schema_extra": "product.csv gains an extra internal_notes column at the end",
    "bad_utf8": "2.5% of product.csv rows carry invalid UTF-8 bytes in name or description",
    "ragged_rows": "~2.5% of product.csv and search_log.csv lines have too few or too many fields",
    "orphan_judgements": "~4% of label.csv rows point at product_ids that do not exist",
    "golden_leak": "3% of searches in search_log.csv use golden query texts",
    "category_shift": "one class (Area Rugs) makes up half of product.csv",
}

_DEFECT_RATES = {
    "duplicate_ids": 0.03,
    "empty_names": 0.03,
    "bad_numbers": 0.03,
    "out_of_range": 0.03,
    "bad_utf8": 0.025,
    "ragged_rows": 0.025,
    "orphan_judgements": 0.04,
    "golden_leak": 0.03,
}
_BAD_NUMBERS = ("four", "4,5", "n/a", "12a", "4.5.1", "--", "NaN?")

_ROW_DEFECTS = (
    "duplicate_ids", "empty_names", "bad_numbers", "out_of_range", "bad_utf8", "ragged_rows",
)  # fmt: skip

# "Text is data": strings that break naive SQL, spreadsheets and renderers, yet are valid
# UTF-8 without tabs or newlines, so they must survive every stage untouched.
# Each is (field index, template); "{}" in the template stands for the generated value.
_TEXT_IS_DATA = (
    (1, "'); DROP TABLE products;--"),
    (1, '=HYPERLINK("x") {}'),
    (4, "{} Cozy vibes only 😍🛋️ — our most-loved pick ✨."),
    (4, "{} ספה נוחה לסלון."),
    (1, "{} أريكة مريحة"),
    (4, "{} <script>alert('x')</script> \"Quoted\" and 'single' quotes are literal."),
)
