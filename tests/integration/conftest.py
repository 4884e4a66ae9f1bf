"""Fixtures of the integration tests: fresh PostgreSQL databases and a Redis database.

Every database is created for one test and dropped after it, even when the test
fails. A service that cannot be reached fails the test under ``CI=true`` and skips
it elsewhere (``require_service`` of the top-level conftest).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import sqlalchemy as sa

CreateDatabase = Callable[[str], str]


def _drop(admin: sa.Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture
def create_database(root_conftest: ModuleType) -> Iterator[CreateDatabase]:
    """``create_database(label)`` -> the URL of a new database, dropped after the test."""
    admin_url: str = root_conftest.PG_ADMIN_URL
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def create(label: str) -> str:
        name = f"shelfguard_it_{label}_{uuid.uuid4().hex[:8]}"
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            root_conftest.require_service("PostgreSQL", str(exc).splitlines()[0])
        created.append(name)
        # The driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
        url = sa.make_url(admin_url).set(drivername="postgresql+psycopg2", database=name)
        return url.render_as_string(hide_password=False)

    try:
        yield create
    finally:
        for name in created:
            _drop(admin, name)
        admin.dispose()


@pytest.fixture
def warehouse_url(create_database: CreateDatabase) -> str:
    """A fresh, empty PostgreSQL warehouse database."""
    return create_database("wh")
