"""Checks: one outcome per expectation, in the shape the ledger and the governance report
read, and GX's validation results turned into them (with samples of the offending rows).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shelfguard.quality.scan_sql import scan_check, scannable, unexpected_rows
from shelfguard.quality.suites import ExpectationSpec, Severity, SuiteSpec
from shelfguard.quality.warehouse import _count_rows, _jsonable, fetch_rows

if TYPE_CHECKING:
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )

SAMPLE_LIMIT = 10

_MAP_EXPECTATIONS = (
    "expect_column_values",
    "expect_column_pair_values",
    "expect_compound_columns",
    "expect_multicolumn",
)
_MESSAGE_LIMIT = 500
_TEXT_LIMIT = 200


def check(
    name: str,
    *,
    passed: bool,
    severity: Severity,
    comment: str,
    observed: Any = None,
    expected: Any = None,
    message: str = "",
    unexpected_count: int | None = None,
    sample_rows: Sequence[Mapping[str, Any]] = (),
    status: str | None = None,
) -> dict[str, Any]:
    """One check's outcome, in the shape the ledger and the governance report read.

    ``status`` is ``pass``, ``fail`` (failed, error severity) or ``warn`` (failed, warn
    severity) unless given (``skipped``). Samples are kept only for failed checks.
    """
    outcome = status or ("pass" if passed else "fail" if severity == "error" else "warn")
    result: dict[str, Any] = {
        "name": name,
        "status": outcome,
        "severity": severity,
        "observed": _jsonable(observed),
        "expected": _jsonable(expected),
        "message": message,
        "comment": comment,
    }
    if unexpected_count is not None:
        result["unexpected_count"] = int(unexpected_count)
    if outcome in ("fail", "warn"):
        result["sample_rows"] = [_small_row(row) for row in list(sample_rows)[:SAMPLE_LIMIT]]
    return result


def _small_row(row: Mapping[str, Any]) -> dict[str, Any]:
    # A reviewer needs the start of a long text, not a runaway description in the ledger.
    values = {str(k): _jsonable(v) for k, v in row.items()}
    return {k: v[:_TEXT_LIMIT] if isinstance(v, str) else v for k, v in values.items()}


def _expected_text(kind: str, kwargs: Mapping[str, Any]) -> str:
    if kind == "unexpected_rows_expectation":
        return "the check query returns no rows"
    shown = {
        k: v
        for k, v in kwargs.items()
        if k not in ("column", "column_list", "column_A", "column_B", "mostly")
    }
    parts = [f"{k}={v}" for k, v in shown.items()]
    mostly = kwargs.get("mostly")
    if isinstance(mostly, int | float) and mostly < 1:
        parts.append(f"at most {1 - mostly:.2%} of rows may fail")
    elif "mostly" in kwargs or kind.startswith(_MAP_EXPECTATIONS):
        parts.append("no row may fail")
    return ", ".join(parts)


def _result_check(
    suite: SuiteSpec,
    spec: ExpectationSpec,
    result: ExpectationValidationResult,
    engine: sa.Engine,
    batch_sql: str,
) -> dict[str, Any]:
    name = suite.check_name(spec.id)
    expected = _expected_text(spec.type, spec.kwargs)
    info = result.exception_info or {}
    errors = [
        item.get("exception_message")
        for item in ([info] if "raised_exception" in info else info.values())
        if isinstance(item, dict) and item.get("raised_exception")
    ]
    if errors:
        return check(
            name,
            passed=False,
            severity=spec.severity,
            comment=spec.comment,
            expected=expected,
            message=f"could not be evaluated: {str(errors[0])[:_MESSAGE_LIMIT]}",
        )
    details: dict[str, Any] = dict(result.result or {})
    passed = bool(result.success)
    if spec.type == "unexpected_rows_expectation":
        return _unexpected_rows_check(
            name, spec, passed, int(details.get("observed_value") or 0), engine, batch_sql
        )
    if "unexpected_count" in details:
        count = int(details["unexpected_count"])
        total = int(details.get("element_count") or 0)
        # GX judges `mostly` against the rows where the column has a value.
        missing = details.get("missing_count")
        base, rows = (total - int(missing), "non-null rows") if missing else (total, "rows")
        share = count / base if base else 0.0
        observed = f"{count} of {base} {rows} ({share:.2%})"
        message = "" if passed else f"{observed} failed; allowed: {expected}"
        samples = details.get("partial_unexpected_index_list")
        if samples is None and not passed and scannable(spec.type, spec.kwargs):
            # Counted in the table scan, which fetches no rows: those of a failed check only.
            try:
                samples = _scan_samples(suite, spec, engine, batch_sql)
            except sa.exc.DBAPIError as exc:
                message += f"; samples unavailable: {str(exc.orig)[:_MESSAGE_LIMIT]}"
        return check(
            name,
            passed=passed,
            severity=spec.severity,
            comment=spec.comment,
            observed=observed,
            expected=expected,
            message=message,
            unexpected_count=count,
            sample_rows=samples or [],
        )
    observed_value = details.get("observed_value")
    return check(
        name,
        passed=passed,
        severity=spec.severity,
        comment=spec.comment,
        observed=observed_value,
        expected=expected,
        message="" if passed else f"observed {observed_value}; expected {expected}",
    )


def _scan_samples(
    suite: SuiteSpec, spec: ExpectationSpec, engine: sa.Engine, batch_sql: str
) -> list[dict[str, Any]]:
    """The first offending rows of a check the table scan counted: key columns and values."""
    query = unexpected_rows(
        sa.text(batch_sql), scan_check(spec.id, spec.type, spec.kwargs), suite.sample_columns
    )
    sql = query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    return fetch_rows(engine, str(sql), limit=SAMPLE_LIMIT)


def _unexpected_rows_check(
    name: str,
    spec: ExpectationSpec,
    passed: bool,
    count: int,
    engine: sa.Engine,
    batch_sql: str,
) -> dict[str, Any]:
    expected = _expected_text(spec.type, spec.kwargs)
    if passed:
        return check(
            name,
            passed=True,
            severity=spec.severity,
            comment=spec.comment,
            observed="0 rows",
            expected=expected,
            unexpected_count=0,
        )
    observed: Any = f"{count} rows"
    samples: list[dict[str, Any]] = []
    unexpected = count
    message = f"{count} offending rows"
    try:
        rows = fetch_rows(
            engine,
            str(spec.kwargs["unexpected_rows_query"]).format(batch=batch_sql),
            limit=SAMPLE_LIMIT,
        )
        if spec.samples is None:
            samples = rows
        else:
            # An aggregate check returns one summary row (the share against the limit);
            # the offending rows themselves come from the entry's `samples` query.
            observed = rows[0] if rows else observed
            listing = spec.samples.format(batch=batch_sql)
            samples = fetch_rows(engine, listing, limit=SAMPLE_LIMIT)
            unexpected = _count_rows(engine, listing)
            message = f"over the limit: {observed}"
    except sa.exc.DBAPIError as exc:
        # The verdict stands (GX computed it); only the illustration is missing.
        message += f"; samples unavailable: {str(exc.orig)[:_MESSAGE_LIMIT]}"
    return check(
        name,
        passed=False,
        severity=spec.severity,
        comment=spec.comment,
        observed=observed,
        expected=expected,
        message=message,
        unexpected_count=unexpected,
        sample_rows=samples,
    )
