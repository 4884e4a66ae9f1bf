"""One scan per table: a suite's row checks computed by one SQL statement, reported by GX.

GX computes each map expectation with queries of its own: the unexpected count (only
partly bundled: uniqueness is a query of its own), the element count, and for every
check, failed or not, a page of unexpected values and one of unexpected rows. On a
raw table that is one pass over the batch per expectation.

Here the suite's checks of the kinds in :data:`~shelfguard.quality.scan_sql.SCANNABLE`
are computed together by one
GX metric, :data:`SCAN_METRIC`, in a single statement over the batch (uniqueness as a
window count in the same pass). Each check stays a GX expectation of its own: a
subclass of the stock expectation that asks GX for the shared metric instead of its own
queries and hands its counts to the stock ``_validate``, so success, ``mostly`` and the
result (element, unexpected and missing counts) are GX's, stored and rendered like any
other. Offending rows are fetched by the caller, for failed checks only
(:func:`shelfguard.quality.scan_sql.unexpected_rows`).

If the combined statement fails (a column missing, a value the column's type refuses),
each check is computed on its own, so only the checks that cannot be computed report
an error.
"""

from __future__ import annotations

from typing import Any, ClassVar

import sqlalchemy as sa
from great_expectations.core.metric_domain_types import MetricDomainTypes
from great_expectations.execution_engine.execution_engine import ExecutionEngine
from great_expectations.execution_engine.sqlalchemy_execution_engine import (
    SqlAlchemyExecutionEngine,
)
from great_expectations.expectations.core.expect_column_pair_values_a_to_be_greater_than_b import (
    ExpectColumnPairValuesAToBeGreaterThanB,
)
from great_expectations.expectations.core.expect_column_values_to_be_between import (
    ExpectColumnValuesToBeBetween,
)
from great_expectations.expectations.core.expect_column_values_to_be_in_set import (
    ExpectColumnValuesToBeInSet,
)
from great_expectations.expectations.core.expect_column_values_to_be_unique import (
    ExpectColumnValuesToBeUnique,
)
from great_expectations.expectations.core.expect_column_values_to_not_be_null import (
    ExpectColumnValuesToNotBeNull,
)
from great_expectations.expectations.core.expect_compound_columns_to_be_unique import (
    ExpectCompoundColumnsToBeUnique,
)
from great_expectations.expectations.core.unexpected_rows_expectation import (
    UnexpectedRowsExpectation,
)
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.expectation_configuration import parse_result_format
from great_expectations.expectations.metrics.metric_provider import metric_value
from great_expectations.expectations.metrics.table_metric_provider import TableMetricProvider
from great_expectations.expectations.registry import get_metric_kwargs
from great_expectations.validator.metric_configuration import MetricConfiguration
from great_expectations.validator.validator import ValidationDependencies

from shelfguard.quality.scan_sql import SCAN_METRIC, compute


class TableScan(TableMetricProvider):
    """Counts of every scanned check of a suite, from one pass over the batch."""

    metric_name = SCAN_METRIC
    value_keys = ("checks",)

    @metric_value(engine=SqlAlchemyExecutionEngine)
    def _sqlalchemy(
        cls,
        execution_engine: SqlAlchemyExecutionEngine,
        metric_domain_kwargs: dict[str, Any],
        metric_value_kwargs: dict[str, Any],
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any],
    ) -> dict[str, dict[str, Any]]:
        selectable, _, _ = execution_engine.get_compute_domain(
            metric_domain_kwargs, domain_type=MetricDomainTypes.TABLE
        )
        base = selectable.subquery("batch") if isinstance(selectable, sa.Select) else selectable
        return compute(
            lambda query: execution_engine.execute_query(query).mappings().one(),
            base,
            metric_value_kwargs["checks"],
        )


class _ReadsTableScan:
    """Mixed into a stock expectation: its counts come from the suite's table scan."""

    # Declared for the type checker; the stock expectation and the subclass set them.
    map_metric: ClassVar[Any]
    scan_key: str
    scan_checks: list[dict[str, Any]]
    configuration: Any

    def get_validation_dependencies(
        self,
        execution_engine: ExecutionEngine[Any] | None = None,
        runtime_configuration: dict[str, Any] | None = None,
        **kwargs: dict[str, Any],
    ) -> ValidationDependencies:
        # Only the result format from the base class: none of the stock metrics.
        dependencies = Expectation.get_validation_dependencies(
            self,  # type: ignore[arg-type]
            execution_engine=execution_engine,
            runtime_configuration=runtime_configuration,
        )
        domain = get_metric_kwargs(
            metric_name="table.row_count",
            configuration=self.configuration,
            runtime_configuration=runtime_configuration,
        )["metric_domain_kwargs"]
        dependencies.set_metric_configuration(
            metric_name=SCAN_METRIC,
            metric_configuration=MetricConfiguration(
                metric_name=SCAN_METRIC,
                metric_domain_kwargs=domain,
                metric_value_kwargs={"checks": self.scan_checks},
            ),
        )
        return dependencies

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> Any:
        counts = metrics[SCAN_METRIC][self.scan_key]
        if "error" in counts:
            raise RuntimeError(counts["error"])
        stock = {
            "table.row_count": counts["rows"],
            "column_values.nonnull.unexpected_count": counts["missing"],
            f"{self.map_metric}.unexpected_count": counts["unexpected"],
            f"{self.map_metric}.filtered_row_count": counts["applies"],
        }
        configuration = dict(runtime_configuration or {})
        result_format = parse_result_format(dict(_as_dict(configuration.get("result_format"))))
        # No unexpected values were computed: ask the stock formatter for counts only.
        if result_format["result_format"] in ("SUMMARY", "COMPLETE"):
            result_format["result_format"] = "BASIC"
        configuration["result_format"] = result_format
        return super()._validate(  # type: ignore[misc]
            metrics=stock, runtime_configuration=configuration, execution_engine=execution_engine
        )


def _as_dict(result_format: Any) -> dict[str, Any]:
    if isinstance(result_format, dict):
        return result_format
    return {"result_format": str(getattr(result_format, "value", result_format or "BASIC"))}


class ExpectColumnValuesToNotBeNullInTableScan(_ReadsTableScan, ExpectColumnValuesToNotBeNull):
    """``expect_column_values_to_not_be_null``, counted in the suite's table scan."""

    scan_key: str
    scan_checks: list[dict[str, Any]]


class ExpectColumnValuesToBeUniqueInTableScan(_ReadsTableScan, ExpectColumnValuesToBeUnique):
    """``expect_column_values_to_be_unique``, counted in the suite's table scan."""

    scan_key: str
    scan_checks: list[dict[str, Any]]


class ExpectColumnValuesToBeBetweenInTableScan(_ReadsTableScan, ExpectColumnValuesToBeBetween):
    """``expect_column_values_to_be_between``, counted in the suite's table scan."""

    scan_key: str
    scan_checks: list[dict[str, Any]]


class ExpectColumnValuesToBeInSetInTableScan(_ReadsTableScan, ExpectColumnValuesToBeInSet):
    """``expect_column_values_to_be_in_set``, counted in the suite's table scan."""

    scan_key: str
    scan_checks: list[dict[str, Any]]


class ExpectCompoundColumnsToBeUniqueInTableScan(_ReadsTableScan, ExpectCompoundColumnsToBeUnique):
    """``expect_compound_columns_to_be_unique``, counted in the suite's table scan."""

    scan_key: str
    scan_checks: list[dict[str, Any]]


class ExpectColumnPairValuesAToBeGreaterThanBInTableScan(
    _ReadsTableScan, ExpectColumnPairValuesAToBeGreaterThanB
):
    """``expect_column_pair_values_a_to_be_greater_than_b``, counted in the table scan."""

    scan_key: str
    scan_checks: list[dict[str, Any]]


#: The scanned counterpart of each stock type of :data:`SCANNABLE`.
SCANNED: dict[str, type[Expectation]] = {
    "expect_column_values_to_not_be_null": ExpectColumnValuesToNotBeNullInTableScan,
    "expect_column_values_to_be_unique": ExpectColumnValuesToBeUniqueInTableScan,
    "expect_column_values_to_be_between": ExpectColumnValuesToBeBetweenInTableScan,
    "expect_column_values_to_be_in_set": ExpectColumnValuesToBeInSetInTableScan,
    "expect_compound_columns_to_be_unique": ExpectCompoundColumnsToBeUniqueInTableScan,
    "expect_column_pair_values_a_to_be_greater_than_b": (
        ExpectColumnPairValuesAToBeGreaterThanBInTableScan
    ),
}


class UnexpectedRowsExpectationCountOnly(UnexpectedRowsExpectation):
    """``unexpected_rows_expectation`` in one statement: the count of the query's rows.

    The stock expectation also fetches up to 200 of the rows, which it reports only
    with the COMPLETE result format; the gate fetches a failed check's rows itself.
    """

    def get_validation_dependencies(
        self,
        execution_engine: ExecutionEngine[Any] | None = None,
        runtime_configuration: dict[str, Any] | None = None,
    ) -> ValidationDependencies:
        dependencies = super().get_validation_dependencies(
            execution_engine=execution_engine, runtime_configuration=runtime_configuration
        )
        if dependencies.result_format.get("result_format") != "COMPLETE":
            dependencies.remove_metric_configuration(_ROWS_METRIC)
        return dependencies

    def _validate(
        self,
        metrics: dict[str, Any],
        runtime_configuration: dict[str, Any] | None = None,
        execution_engine: Any = None,
    ) -> Any:
        return super()._validate(
            metrics={_ROWS_METRIC: None, **metrics},
            runtime_configuration=runtime_configuration,
            execution_engine=execution_engine,
        )


_ROWS_METRIC = "unexpected_rows_query.table"
#: The one-statement counterpart of the SQL check type.
COUNTED = {"unexpected_rows_expectation": UnexpectedRowsExpectationCountOnly}
