"""Fixtures of the integration tests: fresh PostgreSQL databases and a Redis database.

Every database is created for one test and dropped after it, even when the test
fails. A service that cannot be reached fails the test under ``CI=true`` and skips
it elsewhere (``require_service`` of the top-level conftest).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import sqlalchemy as sa

CreateDatabase = Callable[[str], str]


@pytest.fixture
def create_database(root_conftest: ModuleType) -> Iterator[CreateDatabase]:
    """``create_database(label)`` -> the URL of a new database, dropped after the test."""
    with contextlib.ExitStack() as databases:

        def create(label: str) -> str:
            url = databases.enter_context(
                root_conftest.throwaway_database(f"shelfguard_it_{label}")
            )
            # The driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
            named = sa.make_url(url).set(drivername="postgresql+psycopg2")
            return named.render_as_string(hide_password=False)

        yield create


@pytest.fixture
def warehouse_url(create_database: CreateDatabase) -> str:
    """A fresh, empty PostgreSQL warehouse database."""
    return create_database("wh")
