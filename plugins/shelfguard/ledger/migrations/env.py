"""Alembic environment for the shelfguard ledger.

``Ledger.migrate()`` hands over its own connection through
``config.attributes["connection"]``; that connection is already inside a
transaction (and, on PostgreSQL, holds the migration lock), so everything below
runs in it and commits or rolls back as one. Run any other way, for instance to
autogenerate a new revision, it connects to the ``sqlalchemy.url`` option or,
failing that, to ``SHELFGUARD_LEDGER_URL``.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import context

from shelfguard.ledger.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("SHELFGUARD_LEDGER_URL")
    if not url:
        raise RuntimeError("set sqlalchemy.url or SHELFGUARD_LEDGER_URL to the ledger database")
    return url


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode recreates the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Write the migration SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the caller's connection, or on a fresh one to the configured URL."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as fresh:
            _run(fresh)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
