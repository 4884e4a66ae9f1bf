"""Great Expectations glue: reviewed suite files in, validation results pushed down to SQL out.

The suites live in ``expectations/*.yml``, one per dataset, in a small YAML format
governance owners read (GX's own JSON cannot carry comments)::

    suite: raw_products
    table: raw.products
    sample_columns: [product_id, _line_number]
    expectations:
      # duplicate product ids: the same SKU listed twice
      - id: product_id_unique
        type: expect_column_values_to_be_unique
        severity: error
        kwargs:
          column: product_id
          mostly: "{{ 1 - policy.raw_data.max_duplicate_id_share }}"

Limits are Jinja expressions over the policy, rendered before the suite is built:
a value that is exactly one ``{{ expression }}`` keeps the expression's type (a
float for ``mostly``), any other string is rendered as text (SQL). In SQL,
``{{ rows('schema.table') }}`` stands for the rows of that table under test (one
ingested file's rows for raw tables), and ``{batch}`` is GX's placeholder for the
batch being validated. The comment above each entry names the failure it catches;
it is required, and it travels with the check's result into the ledger.

Validation runs in the warehouse: GX's SQL execution engine computes every metric
in SQL, offending rows are fetched with a LIMIT, and the DuckDB file is opened
read-only. Results are stored in a file-backed GX context under
``$SHELFGUARD_HOME/gx``, which also renders the Data Docs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import duckdb_engine
import jinja2
import sqlalchemy as sa
import yaml
from jinja2.sandbox import SandboxedEnvironment
from sqlalchemy.engine.interfaces import ReflectedColumn

from shelfguard import duckdb_wait
from shelfguard.config import project_root
from shelfguard.policy import Policy

if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.core.expectation_validation_result import (
        ExpectationValidationResult,
    )
    from great_expectations.data_context.data_context.abstract_data_context import (
        AbstractDataContext,
    )
    from great_expectations.datasource.fluent.sql_datasource import SQLDatasource

__all__ = [
    "SAMPLE_LIMIT",
    "SEVERITIES",
    "ExpectationSpec",
    "QualityReport",
    "RowScope",
    "Severity",
    "SuiteError",
    "SuiteRun",
    "SuiteSpec",
    "build_suite",
    "check",
    "default_suites_dir",
    "docs_index",
    "fetch_rows",
    "load_suite",
    "open_warehouse",
    "run_suites",
    "template_cache_dir",
]

Severity = Literal["error", "warn"]
SEVERITIES: tuple[Severity, ...] = ("error", "warn")
SAMPLE_LIMIT = 10
GX_DIR = "gx"

_DATASOURCE = "warehouse"
_READONLY_DUCKDB = "shelfguard_readonly"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_JOIN = re.compile(r"\bjoin\b", re.IGNORECASE)
_MARTS_REFERENCE = re.compile(r"(?<![A-Za-z0-9_.])marts\.(?=[a-z_])")
_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_MAP_EXPECTATIONS = (
    "expect_column_values",
    "expect_column_pair_values",
    "expect_compound_columns",
    "expect_multicolumn",
)
_MESSAGE_LIMIT = 500
_TEXT_LIMIT = 200
# libyaml when PyYAML was built with it (the wheels are): suite files are read on every gate.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SUITE_KEYS = {"suite", "table", "gate", "sample_columns", "expectations"}
#: The gate a suite runs in when its file names none: the one for its table's schema.
GATE_OF_SCHEMA = {"raw": "raw_data", "marts": "training_data"}
_ENTRY_KEYS = {"id", "type", "severity", "kwargs", "samples"}


class SuiteError(ValueError):
    """A suite file is unreadable or invalid; the message names the file and the entry."""


class _ReadOnlyDuckDBDialect(duckdb_engine.Dialect):  # type: ignore[misc]
    """duckdb-engine, opened read-only and without SQL transactions.

    GX runs ``execute()`` inside ``with engine.connect()`` and fetches after the block
    has closed the connection. Closing rolls the transaction back, and on DuckDB (whose
    cursor is the connection) that discards the pending result: every metric comes
    back empty (duckdb_engine issue #734). A read-only connection has nothing to roll
    back, and DuckDB's file lock keeps writers out while it is open, so skipping
    BEGIN/ROLLBACK loses nothing and keeps the results.
    """

    # Required of every dialect subclass; nothing here changes how SQL is compiled.
    supports_statement_cache = True

    def connect(self, *cargs: Any, **cparams: Any) -> Any:
        cparams["read_only"] = True
        # Another process may hold the file for one short step: wait for it.
        return duckdb_wait.wait_for_file(
            lambda: super(_ReadOnlyDuckDBDialect, self).connect(*cargs, **cparams),
            str(cargs[0] if cargs else cparams.get("database", "the DuckDB file")),
        )

    def do_begin(self, dbapi_connection: Any) -> None:
        return None

    def do_rollback(self, dbapi_connection: Any) -> None:
        return None

    def do_commit(self, dbapi_connection: Any) -> None:
        return None

    def get_columns(
        self, connection: sa.Connection, table_name: str, schema: str | None = None, **kw: Any
    ) -> list[ReflectedColumn]:
        # The inherited PostgreSQL catalog query joins pg_collation, which DuckDB 2 no
        # longer has; GX would then fall back to `SELECT * FROM <table>` without the
        # schema, which fails (or reads the wrong table) for raw.products.
        rows = connection.execute(
            sa.text(
                "select column_name, data_type, is_nullable from information_schema.columns "
                "where table_schema = :schema and table_name = :table order by ordinal_position"
            ),
            {"schema": schema or "main", "table": table_name},
        ).fetchall()
        if not rows:
            raise sa.exc.NoSuchTableError(f"{schema}.{table_name}")
        return [
            ReflectedColumn(
                name=str(name),
                type=self._column_type(str(data_type)),
                nullable=nullable == "YES",
                default=None,
            )
            for name, data_type, nullable in rows
        ]

    def _column_type(self, data_type: str) -> Any:
        base = data_type.split("(", 1)[0].strip().lower()
        kind = self.ischema_names.get(base, sa.types.NullType)
        return kind()


sa.dialects.registry.register(
    f"duckdb.{_READONLY_DUCKDB}", __name__, _ReadOnlyDuckDBDialect.__name__
)


# --------------------------------------------------------------------------------------
# Suite files
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowScope:
    """Which rows of each table are under test.

    By default every table is tested whole (the marts). A raw-data scope names, per
    table, the value of ``column`` (the ingested file's sha256) that selects the rows
    of the batch; a table the batch did not load has no rows under test.
    """

    column: str | None = None
    partitions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.column is not None and not _IDENTIFIER.match(self.column):
            raise ValueError(f"not a plain column name: {self.column!r}")

    def partition(self, table: str) -> str | None:
        """The partition value selecting ``table``'s rows, or None for the whole table."""
        return None if self.column is None else self.partitions.get(table)

    def includes(self, table: str) -> bool:
        """Whether any rows of ``table`` are under test."""
        return self.column is None or table in self.partitions

    def rows_sql(self, table: str) -> str:
        """A SQL relation holding the rows of ``table`` under test."""
        if not _TABLE.match(table):
            raise ValueError(f"not a schema-qualified table name: {table!r}")
        if self.column is None:
            return table
        value = self.partitions.get(table)
        if value is None:
            return f"(select * from {table} where false)"
        return f"(select * from {table} where {self.column} = {_sql_string(value)})"


@dataclass(frozen=True)
class ExpectationSpec:
    """One rendered entry of a suite file."""

    id: str
    type: str
    kwargs: dict[str, Any]
    severity: Severity
    comment: str
    samples: str | None = None


@dataclass(frozen=True)
class SuiteSpec:
    """A suite file, rendered against a policy and a row scope."""

    name: str
    table: str
    path: Path
    sha256: str
    sample_columns: tuple[str, ...]
    expectations: tuple[ExpectationSpec, ...]

    @property
    def schema_name(self) -> str:
        """The table's schema (``raw`` in ``raw.products``)."""
        return self.table.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        """The table's name without its schema."""
        return self.table.split(".", 1)[1]

    def check_name(self, expectation_id: str) -> str:
        """The check's name in the ledger and in ``policy.severities``: ``<suite>.<id>``."""
        return f"{self.name}.{expectation_id}"


def default_suites_dir() -> Path:
    """``expectations/`` at the project root."""
    return project_root() / "expectations"


def suites_of(gate: str, suites_dir: Path | None = None) -> tuple[str, ...]:
    """The names of the suites ``gate`` runs: every ``<suites_dir>/*.yml`` whose ``gate:``
    names it, or, without a ``gate:`` key, whose ``table`` is in that gate's schema
    (:data:`GATE_OF_SCHEMA`: ``raw.*`` → raw_data, ``marts.*`` → training_data).

    Adding a suite file is enough for its gate to run it. Raises :class:`SuiteError` for a
    file that names no known gate.
    """
    found = []
    for path in sorted((suites_dir or default_suites_dir()).glob("*.yml")):
        try:
            raw = yaml.load(path.read_bytes(), Loader=_YAML_LOADER)
        except (OSError, yaml.YAMLError) as exc:
            raise SuiteError(f"{path}: cannot read the suite file: {exc}") from exc
        if not isinstance(raw, dict):
            raise SuiteError(f"{path}: expected a mapping with suite, table and expectations")
        schema = str(raw.get("table") or "").split(".", 1)[0]
        named = raw.get("gate", GATE_OF_SCHEMA.get(schema))
        if named not in GATE_OF_SCHEMA.values():
            known = ", ".join(sorted(GATE_OF_SCHEMA.values()))
            raise SuiteError(
                f"{path}: 'gate' must be one of {known} (or the table in schema "
                f"{' or '.join(GATE_OF_SCHEMA)}), got {named!r}"
            )
        if named == gate:
            found.append(path.stem)
    return tuple(found)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _comments_above(lines: list[str], line: int) -> str:
    """The ``#`` comment block directly above 0-based ``line``, joined into one sentence."""
    found: list[str] = []
    for text in reversed(lines[:line]):
        stripped = text.strip()
        if not stripped.startswith("#"):
            break
        found.append(stripped.lstrip("#").strip())
    return " ".join(reversed(found)).strip()


def _entry_lines(text: str) -> list[int]:
    """0-based line of every entry of the top-level ``expectations`` list."""
    root = yaml.compose(text, Loader=_YAML_LOADER)
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if key.value == "expectations" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line for item in value.value]
    return []


class _Renderer:
    """Renders the ``{{ }}`` expressions of one suite file."""

    def __init__(self, policy: Policy, scope: RowScope) -> None:
        self._env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
        self._context: dict[str, Any] = {"policy": policy, "rows": scope.rows_sql}

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(item) for item in value]
        if isinstance(value, dict):
            return {key: self.value(item) for key, item in value.items()}
        return value

    def text(self, text: str) -> Any:
        whole = _WHOLE_EXPRESSION.match(text)
        if whole and "{{" not in whole.group("expr"):
            return self._env.compile_expression(whole.group("expr"))(**self._context)
        if "{{" in text or "{%" in text:
            return self._env.from_string(text).render(**self._context)
        return text


def _on_schema(text: str, marts_schema: str | None) -> str:
    """The suite's text with ``marts.<table>`` read from ``marts_schema`` instead."""
    if marts_schema is None or marts_schema == "marts":
        return text
    if not _IDENTIFIER.match(marts_schema):
        raise SuiteError(f"not a schema name: {marts_schema!r}")
    return _MARTS_REFERENCE.sub(f"{marts_schema}.", text)


def load_suite(
    name: str,
    policy: Policy,
    scope: RowScope | None = None,
    *,
    suites_dir: Path | None = None,
    marts_schema: str | None = None,
) -> SuiteSpec:
    """Read ``<suites_dir>/<name>.yml`` and render it against ``policy`` and ``scope``.

    Severities are the effective ones: ``policy.severities["<suite>.<id>"]`` overrides
    what the file says. ``marts_schema`` judges a snapshot of the marts other than the
    published one (a run's candidate, a pinned snapshot): every ``marts.<table>`` the
    suite names, in ``table`` and in its SQL, then reads ``<marts_schema>.<table>``. The
    suite's sha256 is the file's, whatever schema it is run on. Raises
    :class:`SuiteError` naming the file and the entry.
    """
    path = (suites_dir or default_suites_dir()) / f"{name}.yml"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"{path}: cannot read the suite file: {exc.strerror or exc}") from exc
    text = _on_schema(data.decode("utf-8", errors="replace"), marts_schema)
    try:
        raw = yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or Python
        entry_lines = _entry_lines(text)
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: expected a mapping with suite, table and expectations")
    unknown = sorted(set(raw) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if raw.get("suite") != name:
        raise SuiteError(
            f"{path}: 'suite' must be {name!r} (the file's name), got {raw.get('suite')!r}"
        )
    table = raw.get("table")
    if not isinstance(table, str) or not _TABLE.match(table):
        raise SuiteError(f"{path}: 'table' must be a schema-qualified table name, got {table!r}")
    sample_columns = raw.get("sample_columns", [])
    if not isinstance(sample_columns, list) or not all(
        isinstance(c, str) and _IDENTIFIER.match(c) for c in sample_columns
    ):
        raise SuiteError(f"{path}: 'sample_columns' must be a list of column names")
    entries = raw.get("expectations")
    if not isinstance(entries, list) or not entries:
        raise SuiteError(f"{path}: 'expectations' must be a non-empty list")

    renderer = _Renderer(policy, scope or RowScope())
    lines = text.splitlines()
    specs: list[ExpectationSpec] = []
    for number, entry in enumerate(entries, start=1):
        comment = _comments_above(lines, entry_lines[number - 1]) if entry_lines else ""
        spec = _load_entry(path, number, entry, comment, renderer, policy, name)
        if any(existing.id == spec.id for existing in specs):
            raise SuiteError(f"{path}: expectation #{number}: id {spec.id!r} is used twice")
        specs.append(spec)
    return SuiteSpec(
        name=name,
        table=table,
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        sample_columns=tuple(sample_columns),
        expectations=tuple(specs),
    )


def _load_entry(
    path: Path,
    number: int,
    entry: Any,
    comment: str,
    renderer: _Renderer,
    policy: Policy,
    suite: str,
) -> ExpectationSpec:
    where = f"{path}: expectation #{number}"
    if not isinstance(entry, dict):
        raise SuiteError(f"{where}: expected a mapping with id, type, severity and kwargs")
    entry_id = entry.get("id")
    if not isinstance(entry_id, str) or not _IDENTIFIER.match(entry_id):
        raise SuiteError(f"{where}: 'id' must be a lower_snake_case name, got {entry_id!r}")
    where = f"{path}: expectation #{number} ({entry_id})"
    unknown = sorted(set(entry) - _ENTRY_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if not comment:
        raise SuiteError(f"{where}: needs a '# ...' comment above it naming the failure it catches")
    kind = entry.get("type")
    if not isinstance(kind, str) or not kind:
        raise SuiteError(f"{where}: 'type' must name a GX expectation, got {kind!r}")
    severity = entry.get("severity")
    if severity not in SEVERITIES:
        raise SuiteError(
            f"{where}: 'severity' must be one of {', '.join(SEVERITIES)}, got {severity!r}"
        )
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise SuiteError(f"{where}: 'kwargs' must be a mapping")
    samples = entry.get("samples")
    if samples is not None and not isinstance(samples, str):
        raise SuiteError(f"{where}: 'samples' must be a SQL query")
    try:
        rendered = renderer.value(kwargs)
        rendered_samples = None if samples is None else str(renderer.text(samples))
    except (jinja2.TemplateError, ValueError, TypeError, ArithmeticError) as exc:
        raise SuiteError(f"{where}: cannot render {{{{ }}}} expressions: {exc}") from exc
    for sql in (rendered.get("unexpected_rows_query"), rendered_samples):
        if isinstance(sql, str):
            _check_sql(where, sql)
    effective = policy.severity(f"{suite}.{entry_id}", cast(Severity, severity))
    return ExpectationSpec(
        id=entry_id,
        type=kind,
        kwargs=rendered,
        severity=cast(Severity, effective),
        comment=comment,
        samples=rendered_samples,
    )


def _check_sql(where: str, sql: str) -> None:
    if "{batch}" not in sql:
        raise SuiteError(f"{where}: the query must read the rows under test through {{batch}}")
    if _JOIN.search(sql):
        # GX substitutes {batch} with an aliased subquery, except in a query containing
        # JOIN, where it leaves the alias to the author; one form for every query keeps
        # the samples fetched here identical to what GX validated.
        raise SuiteError(
            f"{where}: write the query without JOIN (use IN / EXISTS subqueries) "
            "and read the batch as `(select * from {batch}) as <alias>`"
        )


def build_suite(spec: SuiteSpec) -> ExpectationSuite:
    """The GX suite for ``spec``; raises :class:`SuiteError` on an unknown type or bad kwargs."""
    _gx()
    from great_expectations.core.expectation_suite import ExpectationSuite
    from great_expectations.exceptions.exceptions import ExpectationNotFoundError
    from great_expectations.expectations.metadata_types import FailureSeverity
    from great_expectations.expectations.registry import get_expectation_impl

    severities = {"error": FailureSeverity.CRITICAL, "warn": FailureSeverity.WARNING}
    expectations = []
    seen: dict[str, str] = {}
    for number, entry in enumerate(spec.expectations, start=1):
        where = f"{spec.path}: expectation #{number} ({entry.id})"
        try:
            impl = get_expectation_impl(entry.type)
        except ExpectationNotFoundError as exc:
            raise SuiteError(f"{where}: unknown GX expectation type {entry.type!r}") from exc
        try:
            expectation = impl(
                **entry.kwargs,
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
    # Passed to the constructor, not add_expectation(): that one needs an active context.
    return ExpectationSuite(name=spec.name, expectations=expectations)


# --------------------------------------------------------------------------------------
# The warehouse
# --------------------------------------------------------------------------------------


def _backend(url: str) -> str:
    scheme = url.split(":", 1)[0]
    if scheme.startswith("duckdb"):
        return "duckdb"
    if scheme.startswith("postgres"):
        return "postgresql"
    raise ValueError(f"unsupported warehouse URL {url!r}: expected duckdb:/// or postgresql://")


def _readonly_url(url: str) -> str:
    if _backend(url) == "duckdb":
        return f"duckdb+{_READONLY_DUCKDB}:" + url.split(":", 1)[1]
    return url


def _engine_kwargs(url: str) -> dict[str, Any]:
    if _backend(url) == "postgresql":
        # Every transaction read-only: a typo in a suite's SQL can never write.
        return {"connect_args": {"options": "-c default_transaction_read_only=on"}}
    return {}


@contextmanager
def open_warehouse(url: str) -> Iterator[sa.Engine]:
    """A read-only SQLAlchemy engine on the warehouse, disposed on exit.

    Disposing matters on DuckDB: an open connection holds the file's lock, and a later
    writer (dbt, the next ingest) would be refused.
    """
    engine = sa.create_engine(_readonly_url(url), **_engine_kwargs(url))
    try:
        yield engine
    finally:
        engine.dispose()


def fetch_rows(engine: sa.Engine, sql: str, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of ``sql`` as JSON-ready dicts, at most ``limit`` of them (a LIMIT in SQL)."""
    query = sql if limit is None else f"select * from ({sql}) as limited limit {int(limit)}"
    with engine.connect() as connection:
        result = connection.execute(sa.text(query))
        return [{k: _jsonable(v) for k, v in row._mapping.items()} for row in result]


def _table_exists(engine: sa.Engine, table: str) -> bool:
    schema, name = table.split(".", 1)
    return sa.inspect(engine).has_table(name, schema=schema)


def _jsonable(value: Any) -> Any:
    """A value the ledger's JSON columns accept (no NaN, no bytes, no datetimes)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


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
        return check(
            name,
            passed=passed,
            severity=spec.severity,
            comment=spec.comment,
            observed=observed,
            expected=expected,
            message="" if passed else f"{observed} failed; allowed: {expected}",
            unexpected_count=count,
            sample_rows=details.get("partial_unexpected_index_list") or [],
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


def _count_rows(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(sa.text(f"select count(*) from ({sql}) as counted")).scalar_one()
        )


# --------------------------------------------------------------------------------------
# Running suites
# --------------------------------------------------------------------------------------


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


def _gx() -> Any:
    # GX must never reach the network; its analytics read this before the first context.
    os.environ["GX_ANALYTICS_ENABLED"] = "False"
    # GX logs hundreds of INFO lines per validation; the task log is for the verdict.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations

    return great_expectations


def docs_index(gx_root: Path) -> Path:
    """Where the Data Docs index of the context under ``gx_root`` is written."""
    return gx_root / GX_DIR / "uncommitted" / "data_docs" / "local_site" / "index.html"


def template_cache_dir(gx_root: Path) -> Path:
    """Where the compiled Data Docs templates of the context under ``gx_root`` are kept."""
    return gx_root / GX_DIR / "uncommitted" / "template_cache"


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


def _use_cached_views(context: Any, directory: Path) -> bool:
    """Point the local Data Docs site at the views that keep compiled templates
    (:mod:`shelfguard.gx_views`); True when the site's configuration changed."""
    from shelfguard.gx_views import site_views

    sites = dict(context.variables.data_docs_sites or {})
    site = dict(sites.get("local_site") or {})
    if not site:
        return False
    wanted = site_views(directory)
    if all(site.get(key) == value for key, value in wanted.items()):
        return False
    site.update(wanted)
    sites["local_site"] = site
    context.variables.data_docs_sites = sites
    return True


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
    from great_expectations.core.partitioners import PartitionerColumnValue

    name = "whole_table" if scope.column is None else f"by_{scope.column}"
    try:
        asset: Any = datasource.get_asset(suite.name)
        if (asset.table_name, asset.schema_name) == (suite.table_name, suite.schema_name):
            return asset.get_batch_definition(name)
    except (LookupError, KeyError):
        pass
    # The suite file is the source of truth: an asset that no longer matches it is rebuilt.
    with suppress(LookupError):
        datasource.delete_asset(suite.name)
    asset = datasource.add_table_asset(
        suite.name, table_name=suite.table_name, schema_name=suite.schema_name
    )
    if scope.column is None:
        return asset.add_batch_definition_whole_table(name)
    # A partition of the table, not a query asset: GX reads the columns from the catalog
    # instead of running the query once, unbounded, to learn them.
    return asset.add_batch_definition(
        name,
        partitioner=PartitionerColumnValue(column_name=scope.column),
        validate_partitioner=False,
    )


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
) -> QualityReport:
    """Validate each suite on its table's rows under ``scope``, store and render the results.

    Every metric is computed by the warehouse; offending rows are fetched 10 at most.
    A table absent from the scope is skipped (its file was not in the batch); a table
    that does not exist, or has no rows under test, fails its suite's ``<suite>.table``
    check. Returns the checks and the Data Docs index showing this run.
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
                run, documents = _run_one(context, datasource, engine, suite, scope, run_id)
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
) -> tuple[SuiteRun, list[Any]]:
    from great_expectations.core.validation_definition import ValidationDefinition
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
    rows = _count_rows(engine, f"select * from {batch_sql}")
    if rows == 0:
        return _not_run(suite, f"{suite.table} has no rows under test", failed=True), []

    gx_suite = context.suites.add_or_update(build_suite(suite))
    batch_definition = _batch_definition(datasource, suite, scope)
    validation = context.validation_definitions.add_or_update(
        ValidationDefinition(name=suite.name, data=batch_definition, suite=gx_suite)
    )
    partition = scope.partition(suite.table)
    result: ExpectationSuiteValidationResult = validation.run(
        batch_parameters=None if partition is None else {str(scope.column): partition},
        result_format={
            "result_format": "SUMMARY",
            "partial_unexpected_count": SAMPLE_LIMIT,
            "unexpected_index_column_names": list(suite.sample_columns),
            "return_unexpected_index_query": False,
        },
        run_id=run_id,
    )
    by_id = {
        str((r.expectation_config.meta or {}).get("shelfguard_id")): r
        for r in result.results
        if r.expectation_config is not None
    }
    checks = [
        _result_check(suite, spec, by_id[spec.id], engine, batch_sql) for spec in suite.expectations
    ]
    suite_identifier = ExpectationSuiteIdentifier(name=suite.name)
    identifiers = [
        suite_identifier,
        ValidationResultIdentifier(
            expectation_suite_identifier=suite_identifier,
            run_id=run_id,
            batch_identifier=result.batch_id,
        ),
    ]
    return SuiteRun(suite=suite, checks=checks, rows=rows), identifiers
