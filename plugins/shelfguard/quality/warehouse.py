"""The warehouse: read-only engines on DuckDB or PostgreSQL, and rows fetched from it
as JSON-ready dicts.

DuckDB is opened through a read-only dialect of duckdb-engine (below), registered with
SQLAlchemy as ``duckdb+shelfguard_readonly``; PostgreSQL through read-only transactions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import duckdb_engine
import sqlalchemy as sa
from sqlalchemy.engine.interfaces import ReflectedColumn

from shelfguard.data import duckdb_wait

_READONLY_DUCKDB = "shelfguard_readonly"


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


def _count_rows(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(sa.text(f"select count(*) from ({sql}) as counted")).scalar_one()
        )


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
