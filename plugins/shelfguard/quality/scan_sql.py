"""The SQL of the table scan: a suite's row checks counted in one statement over a batch.

Pure SQLAlchemy (no GX import): the GX metric in :mod:`shelfguard.quality.single_scan`
runs :func:`scan_select` on GX's batch, and the gate fetches the offending rows of a
failed check with :func:`unexpected_rows` on the same rows. Each check's condition is
the one GX's own metric for the stock expectation applies, so the counts are the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

logger = logging.getLogger(__name__)

SCAN_METRIC = "shelfguard.table_scan"

# The stock expectation types computed in the scan, and the kwargs the scan understands.
# An entry with any other kwarg (a row_condition, say) is left to GX's own queries.
_COLUMN = {"column", "mostly"}
SCANNABLE: dict[str, frozenset[str]] = {
    "expect_column_values_to_not_be_null": frozenset(_COLUMN),
    "expect_column_values_to_be_unique": frozenset(_COLUMN),
    "expect_column_values_to_be_between": frozenset(
        _COLUMN | {"min_value", "max_value", "strict_min", "strict_max"}
    ),
    "expect_column_values_to_be_in_set": frozenset(_COLUMN | {"value_set"}),
    "expect_compound_columns_to_be_unique": frozenset({"column_list", "ignore_row_if", "mostly"}),
    "expect_column_pair_values_a_to_be_greater_than_b": frozenset(
        {"column_A", "column_B", "or_equal", "ignore_row_if", "mostly"}
    ),
}
# GX's defaults for rows left out of multi-column checks.
#: What the checks read: GX's batch, or the same rows as SQL text (for the samples).
Relation = sa.FromClause | sa.TextClause
_PAIR_IGNORE = "both_values_are_missing"
_COMPOUND_IGNORE = "all_values_are_missing"


def scannable(kind: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether an entry of type ``kind`` with ``kwargs`` is computed in the table scan."""
    allowed = SCANNABLE.get(kind)
    if allowed is None or not set(kwargs) <= allowed:
        return False
    if kind == "expect_column_values_to_be_between":
        bounds = [kwargs.get("min_value"), kwargs.get("max_value")]
        return any(b is not None for b in bounds) and all(
            b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds
        )
    if kind == "expect_column_values_to_be_in_set":
        values = kwargs.get("value_set")
        return isinstance(values, list) and bool(values) and None not in values
    return True


def scan_check(key: str, kind: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """One check as the scan metric takes it: its key, type and the kwargs SQL needs."""
    return {"key": key, "type": kind, "kwargs": {k: v for k, v in kwargs.items() if k != "mostly"}}


# --------------------------------------------------------------------------------------
# SQL: the conditions of each check over the batch, and the one statement computing all
# --------------------------------------------------------------------------------------


class _Parts:
    """The SQL of one check: rows it applies to, offending rows, missing values, windows."""

    def __init__(self, check: Mapping[str, Any], number: int) -> None:
        kind, kwargs = check["type"], check["kwargs"]
        self.windows: dict[str, list[str]] = {}
        self.applies: sa.ColumnElement[bool] | None = None
        self.missing: sa.ColumnElement[bool] | None = None
        if kind == "expect_compound_columns_to_be_unique":
            columns = list(kwargs["column_list"])
            self.applies = _ignore_rows(columns, kwargs.get("ignore_row_if", _COMPOUND_IGNORE))
            # GX joins the group counts back on equal keys: a row with a NULL key never matches.
            self.unexpected = sa.and_(
                *(sa.column(c).is_not(None) for c in columns), self._window(number, columns) > 1
            )
            return
        if kind == "expect_column_pair_values_a_to_be_greater_than_b":
            a: sa.ColumnClause[Any] = sa.column(kwargs["column_A"])
            b: sa.ColumnClause[Any] = sa.column(kwargs["column_B"])
            self.applies = _ignore_rows(
                [kwargs["column_A"], kwargs["column_B"]], kwargs.get("ignore_row_if", _PAIR_IGNORE)
            )
            expected = (
                sa.or_(a >= b, sa.and_(a.is_(None), b.is_(None)))
                if kwargs.get("or_equal")
                else a > b
            )
            self.unexpected = sa.not_(expected)
            return
        column: sa.ColumnClause[Any] = sa.column(kwargs["column"])
        self.missing = column.is_(None)
        if kind == "expect_column_values_to_not_be_null":
            self.unexpected = column.is_(None)
        elif kind == "expect_column_values_to_be_unique":
            self.unexpected = sa.and_(
                column.is_not(None), self._window(number, [kwargs["column"]]) > 1
            )
        elif kind == "expect_column_values_to_be_between":
            self.unexpected = sa.and_(column.is_not(None), sa.not_(_between(column, kwargs)))
        elif kind == "expect_column_values_to_be_in_set":
            self.unexpected = sa.and_(
                column.is_not(None), sa.not_(column.in_(list(kwargs["value_set"])))
            )
        else:
            raise ValueError(f"not computed in the table scan: {kind}")

    def _window(self, number: int, columns: list[str]) -> sa.ColumnElement[Any]:
        name = f"_shelfguard_n{number}"
        self.windows[name] = columns
        return sa.column(name)

    @property
    def offending(self) -> sa.ColumnElement[bool]:
        """The condition selecting this check's offending rows."""
        return self.unexpected if self.applies is None else sa.and_(self.applies, self.unexpected)


def _ignore_rows(columns: list[str], how: str) -> sa.ColumnElement[bool] | None:
    missing = [sa.column(c).is_(None) for c in columns]
    if how in ("both_values_are_missing", "all_values_are_missing"):
        return sa.not_(sa.and_(*missing))
    if how in ("either_value_is_missing", "any_value_is_missing"):
        return sa.not_(sa.or_(*missing))
    if how in ("neither", "never"):
        return None
    raise ValueError(f"unrecognised ignore_row_if {how!r}")


def _between(column: sa.ColumnClause[Any], kwargs: Mapping[str, Any]) -> sa.ColumnElement[bool]:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    bounds = []
    if low is not None:
        bounds.append(column > low if kwargs.get("strict_min") else column >= low)
    if high is not None:
        bounds.append(column < high if kwargs.get("strict_max") else column <= high)
    return sa.and_(*bounds)


def _with_windows(base: Relation, parts: Sequence[_Parts]) -> Relation:
    """``base``, plus a row count per value for each uniqueness check (one pass, no join)."""
    windows = {name: cols for part in parts for name, cols in part.windows.items()}
    if not windows:
        return base
    counted = [
        sa.func.count().over(partition_by=[sa.column(c) for c in cols]).label(name)
        for name, cols in windows.items()
    ]
    return sa.select(sa.text("*"), *counted).select_from(base).subquery("scanned")


def _count(condition: sa.ColumnElement[bool] | None) -> sa.ColumnElement[Any]:
    if condition is None:
        return sa.func.count()
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def scan_select(base: Relation, checks: Sequence[Mapping[str, Any]]) -> sa.Select[Any]:
    """One statement computing every check of ``checks`` over the rows of ``base``.

    Its one row holds ``row_count`` and, for check number ``n``, ``unexpected_n`` (the
    offending rows), ``missing_n`` (NULLs of a one-column check) and ``applies_n`` (the
    rows a multi-column check looks at, after ``ignore_row_if``).
    """
    parts = [_Parts(check, number) for number, check in enumerate(checks)]
    columns: list[sa.ColumnElement[Any]] = [sa.func.count().label("row_count")]
    for number, part in enumerate(parts):
        columns.append(_count(part.offending).label(f"unexpected_{number}"))
        if part.missing is not None:
            columns.append(_count(part.missing).label(f"missing_{number}"))
        if part.applies is not None:
            columns.append(_count(part.applies).label(f"applies_{number}"))
    return sa.select(*columns).select_from(_with_windows(base, parts))


def unexpected_rows(
    base: Relation, check: Mapping[str, Any], columns: Sequence[str]
) -> sa.Select[Any]:
    """The offending rows of ``check`` in ``base``: ``columns`` and the check's own columns."""
    part = _Parts(check, 0)
    kwargs = check["kwargs"]
    own = [kwargs["column"]] if "column" in kwargs else []
    own += list(kwargs.get("column_list", [])) + [
        kwargs[k] for k in ("column_A", "column_B") if k in kwargs
    ]
    shown: list[sa.ColumnClause[Any]] = [sa.column(c) for c in dict.fromkeys([*columns, *own])]
    return (
        sa.select(*shown)
        .select_from(_with_windows(base, [part]))
        .where(part.offending)
        .order_by(*(sa.column(c) for c in columns))
    )


def _counts(row: Mapping[str, Any], number: int) -> dict[str, int]:
    rows = int(row["row_count"])
    return {
        "rows": rows,
        "unexpected": int(row[f"unexpected_{number}"]),
        "missing": int(row.get(f"missing_{number}", 0)),
        "applies": int(row.get(f"applies_{number}", rows)),
    }


def compute(
    run: Callable[[sa.Select[Any]], Mapping[str, Any]],
    base: Relation,
    checks: Sequence[Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Every check's counts by key, from one statement (``run`` returns its one row).

    If that statement fails, each check is computed on its own: a check that cannot be
    computed gets ``{"error": <message>}`` and does not take the others down with it.
    """
    try:
        row = run(scan_select(base, checks))
        return {check["key"]: _counts(row, n) for n, check in enumerate(checks)}
    except sa.exc.SQLAlchemyError as exc:
        logger.warning("the table scan failed (%s); computing its checks one by one", exc)
    found: dict[str, dict[str, Any]] = {}
    for check in checks:
        try:
            found[check["key"]] = _counts(run(scan_select(base, [check])), 0)
        except sa.exc.SQLAlchemyError as exc:
            found[check["key"]] = {"error": str(getattr(exc, "orig", None) or exc)}
    return found
