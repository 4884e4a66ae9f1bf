"""The GX run: suites built into GX, validated in the warehouse, stored and rendered.

Validation runs in the warehouse: GX's SQL execution engine computes every metric
in SQL, offending rows are fetched with a LIMIT, and the DuckDB file is opened
read-only. A suite's row checks of the common kinds are counted together, in one scan
of the table (:mod:`shelfguard.quality.single_scan`); the others, and the SQL checks
(``unexpected_rows_expectation``), run as GX runs them. Results are stored in a
file-backed GX context under ``$SHELFGUARD_HOME/gx``, which also renders the Data Docs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import sqlalchemy as sa

from shelfguard.quality.checks import SAMPLE_LIMIT, _result_check, check
from shelfguard.quality.data_docs import (
    GX_DIR,
    _use_cached_views,
    docs_index,
    template_cache_dir,
)
from shelfguard.quality.scan_sql import scan_check, scannable
from shelfguard.quality.suites import RowScope, SuiteError, SuiteSpec
from shelfguard.quality.warehouse import (
    _backend,
    _count_rows,
    _engine_kwargs,
    _readonly_url,
    _table_exists,
    open_warehouse,
)

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )
    from great_expectations.datasource.fluent.sql_datasource import SQLDatasource

_DATASOURCE = "warehouse"
_FINGERPRINT = "shelfguard_fingerprint"


def _gx() -> Any:
    # GX must never reach the network; its analytics read this before the first context.
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    # GX logs hundreds of INFO lines per validation; the task log is for the verdict.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def build_suite(spec: SuiteSpec, *, single_scan: bool = True) -> ExpectationSuite:
    """The GX suite for ``spec``; raises :class:`SuiteError` on an unknown type or bad kwargs.

    With ``single_scan``, every entry :func:`~shelfguard.quality.scan_sql.scannable`
    becomes the stock expectation's table-scan counterpart, sharing one scan of the
    table with the suite's other such entries, and a SQL check
    (``unexpected_rows_expectation``) only counts its query's rows; without it, each
    entry is the stock expectation GX computes with its own queries.
    """
    _gx()
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.exceptions.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.registry import get_expectation_impl

    from shelfguard.quality.single_scan import COUNTED, SCANNED

    severities = {"error": FailureSeverity.CRITICAL, "warn": FailureSeverity.WARNING}
    scanned = _scanned_checks(spec) if single_scan else {}
    checks = list(scanned.values())
    expectations = []
    seen: dict[str, str] = {}
    for number, entry in enumerate(spec.expectations, start=1):
        where = f"{spec.path}: expectation #{number} ({entry.id})"
        try:
            impl = get_expectation_impl(entry.type)
        except ExpectationNotFoundError as exc:
            raise SuiteError(f"{where}: unknown GX expectation type {entry.type!r}") from exc
        scan: dict[str, Any] = {}
        if entry.id in scanned:
            impl, scan = SCANNED[entry.type], {"scan_key": entry.id, "scan_checks": checks}
        elif single_scan and entry.type in COUNTED:
            impl = COUNTED[entry.type]
        try:
            expectation = impl(
                **entry.kwargs,
                **scan,
                meta={"shelfguard_id": entry.id, "severity": entry.severity},
                notes=entry.comment,
                severity=severities[entry.severity],
                # A check that cannot be computed must be reported, not crash the others.
                catch_exceptions=True,
            )
        except (ValueError, TypeError) as exc:
            raise SuiteError(f"{where}: invalid kwargs for {entry.type}: {exc}") from exc
        # GX keeps one of two equal expectations and drops the other without a word.
        same = json.dumps([entry.type, entry.kwargs], sort_keys=True, default=str)
        if same in seen:
            raise SuiteError(f"{where}: repeats expectation {seen[same]!r} (same type and kwargs)")
        seen[same] = entry.id
        expectations.append(expectation)
    # Every detail of the built suite, so an unchanged one is not written again (_stored_suite).
    fingerprint = hashlib.sha256(
        json.dumps(
            [gx_version(), [e.configuration.to_json_dict() for e in expectations]],
            sort_keys=True,
            default=str,
        ).encode("utf-8")
    ).hexdigest()
    # Passed to the constructor, not add_expectation(): that one needs an active context.
    return ExpectationSuite(
        name=spec.name, expectations=expectations, meta={_FINGERPRINT: fingerprint}
    )


def gx_version() -> str:
    """The installed Great Expectations version."""
    return str(_gx().__version__)


def _stored_suite(
    context: AbstractDataContext, built: ExpectationSuite
) -> tuple[ExpectationSuite, bool]:
    """The context's suite named like ``built``, and whether it was written now: the
    stored one when its fingerprint is ``built``'s, else ``built`` written. (GX's
    ``add_or_update`` compares, rewrites and reads the suite back on every call, which
    a warm gate paid every time.)"""
    from great_expectations.exceptions.exceptions import DataContextError

    with suppress(DataContextError):
        stored = context.suites.get(built.name)
        if (stored.meta or {}).get(_FINGERPRINT) == built.meta[_FINGERPRINT]:
            return stored, False
    return context.suites.add_or_update(built), True


def _stored_validation(
    context: AbstractDataContext, name: str, batch_definition: Any, suite: ExpectationSuite
) -> Any:
    """The context's validation definition of ``suite`` on ``batch_definition``: the
    stored one when it already binds these two, else one written (GX's
    ``add_or_update`` also rewrites the suite and the data asset every time)."""
    from great_expectations.core.validation_definition import ValidationDefinition
    from great_expectations.exceptions.exceptions import DataContextError

    with suppress(DataContextError):
        stored = context.validation_definitions.get(name)
        if (stored.suite.id, stored.data.id) == (suite.id, batch_definition.id):
            return stored
    return context.validation_definitions.add_or_update(
        ValidationDefinition(name=name, data=batch_definition, suite=suite)
    )


def _scanned_checks(spec: SuiteSpec) -> dict[str, dict[str, Any]]:
    """The entries of ``spec`` counted in its table scan, as the scan metric takes them."""
    return {
        entry.id: scan_check(entry.id, entry.type, entry.kwargs)
        for entry in spec.expectations
        if scannable(entry.type, entry.kwargs)
    }


@dataclass(frozen=True)
class SuiteRun:
    """One suite's outcome: a check per expectation (or one explaining why it did not run)."""

    suite: SuiteSpec
    checks: list[dict[str, Any]]
    rows: int | None


@dataclass(frozen=True)
class QualityReport:
    """Every suite run of one gate and the Data Docs index that shows them."""

    runs: list[SuiteRun]
    docs_index: Path | None

    @property
    def checks(self) -> list[dict[str, Any]]:
        """All checks, suite by suite, in file order."""
        return [item for run in self.runs for item in run.checks]


@contextmanager
def _locked(gx_root: Path) -> Iterator[None]:
    # Two gates running at once would both rewrite the context's YAML and JSON stores.
    lock_path = gx_root / GX_DIR / ".shelfguard.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _context(gx_root: Path) -> AbstractDataContext:
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=str(gx_root))
    if context.variables.analytics_enabled is not False:
        context.enable_analytics(False)
    changed = False
    if context.variables.config_variables_file_path is not None:
        # Nothing here uses GX config variables, and GX re-reads their YAML file for every
        # value it substitutes (about fifty times a gate); environment variables still work.
        context.variables.config_variables_file_path = None
        changed = True
    bars: Any = context.variables.progress_bars
    # A context read back from its YAML holds this section as a plain dict.
    shown = (
        bars.get("globally", True) if isinstance(bars, dict) else getattr(bars, "globally", True)
    )
    if bars is None or shown:
        context.variables.progress_bars = ProgressBarsConfig(
            globally=False, metric_calculations=False
        )
        changed = True
    if _use_cached_views(context, template_cache_dir(gx_root)):
        changed = True
    if changed:
        context.variables.save()
    return cast("AbstractDataContext", context)


def _datasource(context: AbstractDataContext, url: str) -> SQLDatasource:
    sources: Any = context.data_sources
    kwargs = _engine_kwargs(url)
    connection_string = url if _backend(url) == "postgresql" else _readonly_url(url)
    current = sources.all().get(_DATASOURCE)
    # Every add_or_update rewrites the context's YAML and drops the assets: only when needed.
    if current is not None and (str(current.connection_string), current.kwargs) == (
        connection_string,
        kwargs,
    ):
        return cast("SQLDatasource", current)
    add = (
        sources.add_or_update_postgres
        if _backend(url) == "postgresql"
        else sources.add_or_update_sql
    )
    datasource = add(
        name=_DATASOURCE,
        connection_string=connection_string,
        create_temp_table=False,
        kwargs=kwargs,
    )
    return cast("SQLDatasource", datasource)


def _batch_definition(datasource: SQLDatasource, suite: SuiteSpec, scope: RowScope) -> Any:
    """The batch of ``suite``'s rows under test: the whole table, or a query for its rows.

    Not a partition of the table: GX lists a partitioned table's batches (a distinct
    over the whole table, every batch ever loaded) before it can pick one.
    """
    query = None if scope.column is None else scope.rows_query(suite.table)
    with suppress(LookupError, KeyError):
        asset: Any = datasource.get_asset(suite.name)
        if query is None and asset.type == "table":
            if (asset.table_name, asset.schema_name) == (suite.table_name, suite.schema_name):
                return asset.get_batch_definition("whole_table")
        elif query is not None and asset.type == "query" and asset.query == query:
            return asset.get_batch_definition("batch")
    # The suite file and the scope are the source of truth: an asset that no longer
    # matches them is rebuilt.
    with suppress(LookupError):
        datasource.delete_asset(suite.name)
    if query is None:
        asset = datasource.add_table_asset(
            suite.name, table_name=suite.table_name, schema_name=suite.schema_name
        )
        return asset.add_batch_definition_whole_table("whole_table")
    asset = datasource.add_query_asset(suite.name, query=query)
    return asset.add_batch_definition_whole_table("batch")


def _scanned_rows(result: ExpectationSuiteValidationResult) -> int | None:
    """The rows the table scan counted, or None if no check read it successfully."""
    for item in result.results:
        config = item.expectation_config
        counted = (item.result or {}).get("element_count")
        if config is not None and "scan_key" in config.kwargs and counted is not None:
            return int(counted)
    return None


def _not_run(suite: SuiteSpec, reason: str, *, failed: bool) -> SuiteRun:
    """One check standing for the whole suite, when there is nothing to validate."""
    outcome = check(
        suite.check_name("table"),
        passed=not failed,
        severity="error",
        comment="the table under test is missing or empty: none of the suite's checks can run",
        observed=reason,
        message=reason,
        status=None if failed else "skipped",
    )
    return SuiteRun(suite=suite, checks=[outcome], rows=None if not failed else 0)


def run_suites(
    suites: Sequence[SuiteSpec],
    *,
    warehouse_url: str,
    gx_root: Path,
    run_name: str,
    scope: RowScope | None = None,
    single_scan: bool = True,
) -> QualityReport:
    """Validate each suite on its table's rows under ``scope``, store and render the results.

    Every metric is computed by the warehouse; offending rows are fetched 10 at most.
    A table absent from the scope is skipped (its file was not in the batch); a table
    that does not exist, or has no rows under test, fails its suite's ``<suite>.table``
    check. Returns the checks and the Data Docs index showing this run.

    ``single_scan`` counts each suite's row checks in one scan of its table (see
    :func:`build_suite`); ``False`` leaves every expectation to GX's own queries, one
    or more per expectation, with the same verdicts and counts.
    """
    scope = scope or RowScope()
    _gx()
    from great_expectations.core.run_identifier import RunIdentifier

    # GX file stores refuse path separators in keys; ledger run ids are "<dag>/<run>".
    safe_name = re.sub(r"[/\\]", "__", run_name)
    run_id = RunIdentifier(run_name=safe_name, run_time=datetime.now(UTC))
    runs: list[SuiteRun] = []
    identifiers: list[Any] = []
    with _locked(gx_root), open_warehouse(warehouse_url) as engine:
        context = _context(gx_root)
        datasource = _datasource(context, warehouse_url)
        try:
            for suite in suites:
                run, documents = _run_one(
                    context, datasource, engine, suite, scope, run_id, single_scan=single_scan
                )
                runs.append(run)
                identifiers.extend(documents)
        finally:
            datasource.get_execution_engine().close()
            datasource.get_engine().dispose()
        index: Path | None = None
        if identifiers:
            sites = context.build_data_docs(resource_identifiers=identifiers)
            index = docs_index(gx_root) if sites else None
    return QualityReport(runs=runs, docs_index=index)


def _run_one(
    context: AbstractDataContext,
    datasource: SQLDatasource,
    engine: sa.Engine,
    suite: SuiteSpec,
    scope: RowScope,
    run_id: Any,
    *,
    single_scan: bool,
) -> tuple[SuiteRun, list[Any]]:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    if not scope.includes(suite.table):
        reason = f"{suite.table}: no file of this batch loads it"
        return _not_run(suite, reason, failed=False), []
    if not _table_exists(engine, suite.table):
        return _not_run(suite, f"{suite.table} does not exist", failed=True), []
    # The same relation GX puts in place of {batch}, for the sample queries run here.
    batch_sql = f"{scope.rows_sql(suite.table)} AS subselect"
    gx_suite, suite_written = _stored_suite(context, build_suite(suite, single_scan=single_scan))
    # The table scan counts the rows under test; without one, they are counted first.
    rows: int | None = None
    if not (single_scan and _scanned_checks(suite)):
        rows = _count_rows(engine, f"select * from {batch_sql}")
        if rows == 0:
            return _not_run(suite, f"{suite.table} has no rows under test", failed=True), []
    batch_definition = _batch_definition(datasource, suite, scope)
    validation = _stored_validation(context, suite.name, batch_definition, gx_suite)
    result: ExpectationSuiteValidationResult = validation.run(
        result_format={
            "result_format": "SUMMARY",
            "partial_unexpected_count": SAMPLE_LIMIT,
            "unexpected_index_column_names": list(suite.sample_columns),
            "return_unexpected_index_query": False,
        },
        run_id=run_id,
    )
    if rows is None:
        rows = _scanned_rows(result)
        if rows is None:  # the scan failed: its checks say why
            rows = _count_rows(engine, f"select * from {batch_sql}")
        if rows == 0:
            return _not_run(suite, f"{suite.table} has no rows under test", failed=True), []
    by_id = {
        str((r.expectation_config.meta or {}).get("shelfguard_id")): r
        for r in result.results
        if r.expectation_config is not None
    }
    checks = [
        _result_check(suite, spec, by_id[spec.id], engine, batch_sql) for spec in suite.expectations
    ]
    suite_identifier = ExpectationSuiteIdentifier(name=suite.name)
    # An unchanged suite's page is already rendered: only a new or changed one is.
    identifiers: list[Any] = [suite_identifier] if suite_written else []
    identifiers.append(
        ValidationResultIdentifier(
            expectation_suite_identifier=suite_identifier,
            run_id=run_id,
            batch_identifier=result.batch_id,
        )
    )
    return SuiteRun(suite=suite, checks=checks, rows=rows), identifiers
