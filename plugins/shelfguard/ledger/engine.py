"""The ledger's database set-up: the engine, SQLite's pragmas, Alembic's config and the locks.

SQLite (embedded runtime, one file shared by Airflow task processes and the CLI)
and PostgreSQL (production) are the two supported backends; the settings here are
what makes them behave the same under concurrent writers.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from alembic.config import Config

from shelfguard.ledger.records import LedgerError

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 30_000
# Serialises concurrent ``migrate()`` calls on PostgreSQL (every process calls it
# on start); any constant works as long as nothing else uses it.
_PG_MIGRATION_LOCK = 0x5348454C46475244
# Serialises appends to the hash chain on PostgreSQL (SQLite's BEGIN IMMEDIATE
# already serialises every writer); taken first in the transaction, before any row lock.
_PG_CHAIN_LOCK = 0x5348454C46434841
_WRITE_OPTION = "shelfguard_write"
_ALEMBIC_LOCK = threading.Lock()


def alembic_config() -> Config:
    """Alembic configuration for the ledger migrations, built in code (no alembic.ini).

    Set ``sqlalchemy.url`` on it to run Alembic commands (``revision
    --autogenerate``, ``history``...) against a ledger database directly.
    """
    config = Config()
    # ConfigParser treats "%" as interpolation, and a checkout path may contain one.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    return config


def _create_engine(url: str) -> sa.Engine:
    try:
        backend = sa.make_url(url).get_backend_name()
    except sa.exc.ArgumentError as exc:
        raise LedgerError(f"cannot parse the ledger URL: {exc}") from exc
    if backend not in ("sqlite", "postgresql"):
        raise LedgerError(f"ledger database {backend!r} is not supported: use sqlite or postgresql")
    engine = sa.create_engine(url, pool_pre_ping=True)
    if backend == "sqlite":
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (see _on_begin); the driver's own
        # transaction handling skips SELECTs, so reads would not be repeatable.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # Airflow task processes and the CLI share the file: wait for a
            # lock instead of failing at once with "database is locked".
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            # Readers (the UI, the CLI) keep working while a task writes.
            cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        # A writer takes the write lock up front: a deferred transaction that
        # upgrades from reading to writing gets SQLITE_BUSY immediately, without
        # the busy timeout, when another process wrote in between.
        writing = connection.get_execution_options().get(_WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _set_sqlite_foreign_keys(connection: sa.Connection, enabled: bool) -> None:
    # The pragma is ignored inside a transaction, and any statement sent through
    # SQLAlchemy would begin one first; so it goes straight to the driver.
    driver = cast(Any, connection.connection.driver_connection)
    if driver is not None:  # None once the connection was invalidated by an error
        driver.execute(f"PRAGMA foreign_keys = {'ON' if enabled else 'OFF'}")
