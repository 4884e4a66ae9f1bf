"""Shared fixtures of the dbt tests: the clean data set, ingested and built once per session.

Building the project takes seconds, not milliseconds, so every test that only reads
the result shares one warehouse; tests that change data work on a copy of it.
"""

from __future__ import annotations

import pytest
from dbt_support import BuiltWarehouse, ingest_folder, make_settings

from shelfguard.data.dbt_project import build
from shelfguard.data.generator import GenerateResult, generate
from shelfguard.policy import Policy, load_policy

PRODUCTS = 2000
SEED = 42


@pytest.fixture(scope="session")
def policy() -> Policy:
    """The repository's governance.yml (k-anonymity 5)."""
    return load_policy()


@pytest.fixture(scope="session")
def clean_data(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    """The generator's clean data set: 2,000 products, seed 42."""
    return generate(tmp_path_factory.mktemp("clean-data"), products=PRODUCTS, seed=SEED)


@pytest.fixture(scope="session")
def duckdb_warehouse(
    tmp_path_factory: pytest.TempPathFactory, clean_data: GenerateResult, policy: Policy
) -> BuiltWarehouse:
    """The clean data ingested into DuckDB and the whole project built (models and tests)."""
    settings = make_settings(tmp_path_factory.mktemp("duckdb-home"))
    ingest_folder(clean_data.out_dir, settings)
    result = build(settings, policy)
    return BuiltWarehouse(settings=settings, data=clean_data, result=result)
