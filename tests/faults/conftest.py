"""Fixtures of the fault tests: a private PostgreSQL server to crash and restart."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest
from pg_server import PgServer, find_binaries


@pytest.fixture
def server(root_conftest: ModuleType) -> Iterator[PgServer]:
    """A running private PostgreSQL, stopped and removed after the test."""
    binaries = find_binaries()
    if isinstance(binaries, str):
        root_conftest.require_service("PostgreSQL server binaries (initdb, pg_ctl)", binaries)
        raise AssertionError("unreachable")  # require_service fails or skips
    pg = PgServer(binaries)
    try:
        pg.start()  # a failure names pg_ctl's output and the log's tail
        yield pg
    finally:
        pg.cleanup()
