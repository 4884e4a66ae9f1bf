"""Fixtures of the gate tests: real generated batches, a real DuckDB warehouse, a real ledger.

Generating and ingesting a batch takes about a second, a gate run two; every test of
a module shares one home (warehouse, ledger, GX context) and each batch is ingested
once. Batches accumulate in the shared raw tables on purpose: a gate must only ever
look at the rows of its own batch.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa

from shelfguard.airflow import tasks
from shelfguard.config import Settings, load_settings
from shelfguard.data.generator import generate
from shelfguard.gates import GateOutcome, run_gate
from shelfguard.ledger import Ledger

PRODUCTS = 400
# Fewer searches than the generator's default: the raw gate needs a log, not a model's worth.
SEARCHES = 1000
SEED = 7
DAG_ID = "catalog_refresh"


class _TaskInstance:
    """What the ingest task bodies need from ``ti``: somewhere to push an XCom."""

    def xcom_push(self, key: str, value: Any) -> None:
        del key, value


def airflow_context(airflow_run_id: str, **extra: Any) -> dict[str, Any]:
    """The part of an Airflow task context the shelfguard task bodies read."""
    return {
        "run_id": airflow_run_id,
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "ti": _TaskInstance(),
        **extra,
    }


@dataclass
class Home:
    """One SHELFGUARD_HOME: settings, ledger, and the batches already landed in it."""

    settings: Settings
    ledger: Ledger
    data_root: Path
    runs: dict[str, str] = field(default_factory=dict)
    verdicts: dict[str, GateOutcome] = field(default_factory=dict)

    def land(self, *defects: str) -> str:
        """Generate a batch with ``defects``, start a run and ingest it; the ledger run id."""
        key = "+".join(defects) or "clean"
        if key not in self.runs:
            source = self.data_root / key
            generate(source, products=PRODUCTS, seed=SEED, searches=SEARCHES, defects=list(defects))
            context = airflow_context(f"manual__{key}", params={"source": str(source)})
            run_id = tasks.start_run(context, publishes=True)
            tasks.ingest(context)
            self.runs[key] = run_id
        return self.runs[key]

    def land_again(self, *defects: str) -> str:
        """The same files as :meth:`land` delivered again, in a run of their own."""
        self.land(*defects)
        key = "+".join(defects) or "clean"
        source = self.data_root / key
        context = airflow_context(f"manual__{key}__again", params={"source": str(source)})
        run_id = tasks.start_run(context, publishes=True)
        tasks.ingest(context)
        return run_id

    def raw_gate(self, *defects: str) -> GateOutcome:
        """The raw_data verdict on the batch with ``defects`` (judged once per home)."""
        key = "+".join(defects) or "clean"
        if key not in self.verdicts:
            run_id = self.land(*defects)
            self.verdicts[key] = run_gate(
                "raw_data", run_id, settings=self.settings, ledger=self.ledger
            )
        return self.verdicts[key]

    def context(self, *defects: str) -> dict[str, Any]:
        """The Airflow task context of the run that landed the batch with ``defects``."""
        return airflow_context(f"manual__{'+'.join(defects) or 'clean'}")

    def start(self, airflow_run_id: str, dag_id: str = "search_model_retraining") -> str:
        """Open a run in the ledger (no ingest): the training_data gate's situation."""
        run_id = f"{dag_id}/{airflow_run_id}"
        self.ledger.start_run(run_id, dag_id)
        return run_id

    def build_marts(self, variant: str = "clean") -> None:
        """Replace the warehouse's ``marts.*`` with the fixture marts of ``variant``."""
        build_duckdb_marts(self.settings.duckdb_path, variant)


@contextmanager
def _home_at(path: Path, patch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A home at ``path``, with SHELFGUARD_HOME pointing at it (the task bodies read it)."""
    for name in [n for n in os.environ if n.startswith("SHELFGUARD_")]:
        if name != "SHELFGUARD_TEST_PG_URL":
            patch.delenv(name)
    patch.setenv("SHELFGUARD_HOME", str(path / "home"))
    settings = load_settings()
    settings.ensure_dirs()
    ledger = Ledger(settings.ledger_url)
    ledger.migrate()
    try:
        yield Home(settings=settings, ledger=ledger, data_root=path / "data")
    finally:
        ledger.dispose()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """A home shared by every test of the module."""
    with (
        pytest.MonkeyPatch.context() as patch,
        _home_at(tmp_path_factory.mktemp("gates"), patch) as shared,
    ):
        yield shared


@pytest.fixture
def fresh_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A home of the test's own."""
    with _home_at(tmp_path, monkeypatch) as own:
        yield own


# --------------------------------------------------------------------------------------
# Fixture marts: the dbt contract's columns, built with plain SQL (DuckDB and PostgreSQL)
# --------------------------------------------------------------------------------------

GOLDEN_QUERIES = 20
CLASSES = 10


def marts_sql(variant: str = "clean") -> list[str]:
    """Statements creating ``marts.*`` with clean data, or with one named defect.

    ``marts.agg_query_popularity`` is not in the gate's contract with dbt but is what the
    k-anonymity check reads (distinct users per query). Variants: ``clean``;
    ``golden_leak`` (a training query equal to a golden query once normalised);
    ``k_anonymity`` (a training query typed by 2 users); ``category_shift`` (one class
    holds most of the catalog).
    """
    statements = [
        "drop schema if exists marts cascade",
        "create schema marts",
        f"""
        create table marts.dim_products as
        select
            i as product_id,
            'Product ' || i as product_name,
            'Class ' || (i % {CLASSES}) as product_class,
            'Furniture / Class ' || (i % {CLASSES}) as category_hierarchy,
            'Furniture' as top_category,
            'Brand ' || (i % 7) as brand,
            'Black' as color,
            'Oak' as material,
            cast(99.5 + i as double precision) as price,
            10 as rating_count,
            cast(4.5 as double precision) as average_rating,
            3 as review_count,
            'Product ' || i || ' Class ' || (i % {CLASSES}) as text_to_embed,
            md5('product ' || i) as content_hash,
            true as is_active
        from generate_series(1, 300) as g(i)
        """,
        """
        create table marts.fct_training_pairs as
        select
            'pair-' || i as pair_id,
            'training query ' || (i % 80) as query,
            (i % 300) + 1 as product_id,
            1 + (i % 3) as grade,
            cast(1.0 as double precision) as weight,
            5 + (i % 4) as n_users,
            20 as impressions,
            3 as clicks,
            cast(0.15 as double precision) as debiased_ctr,
            case when i % 10 = 0 then 'validation' else 'train' end as split
        from generate_series(1, 400) as g(i)
        """,
        f"""
        create table marts.fct_golden_judgements as
        select
            q * 10 + k as judgement_id,
            q as query_id,
            'golden query ' || q as query,
            'Class ' || (q % {CLASSES}) as query_class,
            q * 5 + k as product_id,
            case k when 1 then 'Exact' when 2 then 'Partial' else 'Irrelevant' end as label,
            case k when 1 then 2 when 2 then 1 else 0 end as grade,
            true as is_known_product
        from generate_series(1, {GOLDEN_QUERIES}) as gq(q)
        cross join generate_series(1, 4) as gk(k)
        """,
        """
        create table marts.agg_query_popularity as
        select query, 3 * max(n_users) as n_searches, max(n_users) as n_users, 5 as n_clicks
        from marts.fct_training_pairs
        group by query
        """,
        """
        create table marts.agg_category_mix as
        select product_class, count(*) as n_products, 1.0 * count(*) / 300 as share
        from marts.dim_products
        group by product_class
        """,
    ]
    if variant == "golden_leak":
        leaked = "'  Golden  QUERY 3 '"
        statements += [
            "insert into marts.fct_training_pairs values "
            f"('pair-leak', {leaked}, 7, 2, 1.0, 9, 20, 3, 0.15, 'train')",
            f"insert into marts.agg_query_popularity values ({leaked}, 30, 9, 5)",
        ]
    elif variant == "k_anonymity":
        statements.append(
            "update marts.agg_query_popularity set n_users = 2 where query = 'training query 17'"
        )
    elif variant == "category_shift":
        statements.append(
            "update marts.agg_category_mix set n_products = 2700, share = 0.9 "
            "where product_class = 'Class 0'"
        )
    elif variant != "clean":
        raise ValueError(f"unknown marts variant {variant!r}")
    return statements


def build_duckdb_marts(path: Path, variant: str = "clean") -> None:
    """Create (or replace) the fixture marts in the DuckDB file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        for statement in marts_sql(variant):
            con.execute(statement)


@pytest.fixture
def marts_home(fresh_home: Home) -> Home:
    """A home of the test's own whose DuckDB warehouse holds the clean fixture marts."""
    fresh_home.build_marts("clean")
    return fresh_home


@pytest.fixture
def postgres_marts(postgres_url: str) -> Iterator[str]:
    """A database of its own on the local PostgreSQL holding the ``golden_leak`` marts."""
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"shelfguard_gates_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in marts_sql("golden_leak"):
                conn.execute(sa.text(statement))
        yield url
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
