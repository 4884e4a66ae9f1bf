"""Suite files: reading ``expectations/*.yml``, rendering them against the policy, and
finding the suites each gate runs.

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
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from shelfguard.config import project_root
from shelfguard.policy import Policy

Severity = Literal["error", "warn"]
SEVERITIES: tuple[Severity, ...] = ("error", "warn")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_TABLE = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_JOIN = re.compile(r"\bjoin\b", re.IGNORECASE)
_MARTS_REFERENCE = re.compile(r"(?<![A-Za-z0-9_.])marts\.(?=[a-z_])")
_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
# libyaml when PyYAML was built with it (the wheels are): suite files are read on every gate.
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SUITE_KEYS = {"suite", "table", "gate", "sample_columns", "expectations"}
#: The gate a suite runs in when its file names none: the one for its table's schema.
GATE_OF_SCHEMA = {"raw": "raw_data", "marts": "training_data"}
_ENTRY_KEYS = {"id", "type", "severity", "kwargs", "samples"}


class SuiteError(ValueError):
    """A suite file is unreadable or invalid; the message names the file and the entry."""


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

    def includes(self, table: str) -> bool:
        """Whether any rows of ``table`` are under test."""
        return self.column is None or table in self.partitions

    def rows_sql(self, table: str) -> str:
        """A SQL relation holding the rows of ``table`` under test."""
        if not _TABLE.match(table):
            raise ValueError(f"not a schema-qualified table name: {table!r}")
        if self.column is None:
            return table
        return f"({self.rows_query(table)})"

    def rows_query(self, table: str) -> str:
        """A query selecting the rows of ``table`` under test."""
        if not _TABLE.match(table):
            raise ValueError(f"not a schema-qualified table name: {table!r}")
        value = self.partitions.get(table)
        if self.column is None:
            return f"select * from {table}"
        if value is None:
            return f"select * from {table} where false"
        return f"select * from {table} where {self.column} = {_sql_string(value)}"


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


def suite_gates(suites_dir: Path | None = None) -> dict[str, str]:
    """Every suite file of ``suites_dir`` (``<name>.yml``, in name order) and the gate it
    runs in: the one its ``gate:`` names, or, without a ``gate:`` key, the gate of its
    ``table``'s schema (:data:`GATE_OF_SCHEMA`: ``raw.*`` → raw_data, ``marts.*`` →
    training_data).

    Raises :class:`SuiteError` for a file that names no known gate.
    """
    found: dict[str, str] = {}
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
        found[path.stem] = str(named)
    return found


def suites_of(gate: str, suites_dir: Path | None = None) -> tuple[str, ...]:
    """The names of the suites ``gate`` runs: every ``<suites_dir>/*.yml`` bound to it
    (:func:`suite_gates`), in name order.

    Adding a suite file is enough for its gate to run it; the policy's ``required_suites``
    names those it must find (see :func:`shelfguard.gates.common.gate_suites`). Raises
    :class:`SuiteError` for a file that names no known gate.
    """
    return tuple(name for name, bound in suite_gates(suites_dir).items() if bound == gate)


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
