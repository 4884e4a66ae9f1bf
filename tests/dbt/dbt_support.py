"""Helpers of the dbt tests: settings for an isolated home, ingest, queries, copies.

A module of its own (not conftest.py) so test modules can import it by a unique name.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from shelfguard.config import Settings, load_settings
from shelfguard.data.dbt_project import DbtBuildResult
from shelfguard.data.generator import GenerateResult
from shelfguard.data.ingest import ingest
from shelfguard.data.publication import register_batch
from shelfguard.ledger import Ledger


@dataclass(frozen=True)
class BuiltWarehouse:
    """A DuckDB warehouse with the clean data ingested and the dbt project built on it."""

    settings: Settings
    data: GenerateResult
    result: DbtBuildResult

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """Run a read-only query against the warehouse."""
        return query(self.settings, sql)


#: The pseudonymisation key of the dbt tests' warehouses (DuckDB and PostgreSQL alike).
TEST_PSEUDONYM_KEY = b"dbt-tests-pseudonym-key-32-bytes"


def make_settings(home: Path, env: Mapping[str, str] | None = None) -> Settings:
    """Settings for an isolated home, independent of the process environment."""
    settings = load_settings({"SHELFGUARD_HOME": str(home), **(env or {})})
    settings.ensure_dirs()
    return settings


def ingest_folder(source: Path, settings: Settings, *, published: bool = True) -> str:
    """Load a folder of WANDS-layout files into the home's warehouse, as the DAG does.

    The batch is registered as landed; with ``published`` (the default) it is also
    marked published, as if a run had gated and published it, so that staging reads
    it (these tests are about the transformations, not the gates). Returns the batch id.
    """
    ledger = Ledger(settings.ledger_url)
    try:
        ledger.migrate()
        manifest = ingest(source, settings.duckdb_path, ledger, pseudonym_key=TEST_PSEUDONYM_KEY)
    finally:
        ledger.dispose()
    register_batch(settings, manifest.batch_id, [(f.table, f.sha256) for f in manifest.files])
    if published:
        with duckdb.connect(str(settings.duckdb_path)) as con:
            con.execute(
                "insert into governance.published_batches values (?, 'test-snapshot', now())",
                [manifest.batch_id],
            )
    return manifest.batch_id


def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Run a read-only query against a DuckDB warehouse."""
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def copy_warehouse(built: BuiltWarehouse, home: Path) -> Settings:
    """A new home whose warehouse starts as a copy of the built one."""
    settings = make_settings(home)
    shutil.copyfile(built.settings.duckdb_path, settings.duckdb_path)
    return settings
