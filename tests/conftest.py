"""Shared fixtures: an isolated shelfguard home per test, and the local PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# Before anything imports Airflow: a private Airflow home, no examples, no outside calls.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="shelfguard-test-airflow-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from shelfguard.config import Settings, load_settings

PG_ADMIN_URL = os.environ.get(
    "SHELFGUARD_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_service(name: str, reason: str) -> None:
    """Fail under CI=true, skip on a laptop: a missing service must never pass silently in CI."""
    message = f"{name} is unreachable: {reason}"
    if _in_ci():
        pytest.fail(message + " (CI=true: services are required)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def root_conftest(pytestconfig: pytest.Config) -> ModuleType:
    """This module as loaded by pytest (``require_service``, ``PG_ADMIN_URL``), for the
    fixtures of other folders: importing it by name could find another conftest."""
    path = Path(__file__).resolve()
    module = pytestconfig.pluginmanager.get_plugin(str(path))
    assert isinstance(module, ModuleType), f"{path} is not loaded as a conftest plugin"
    return module


@pytest.fixture
def sg_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A fresh SHELFGUARD_HOME with the embedded defaults, set in the environment."""
    home = tmp_path / "home"
    for name in list(os.environ):
        if name.startswith("SHELFGUARD_") and name != "SHELFGUARD_TEST_PG_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("SHELFGUARD_HOME", str(home))
    settings = load_settings()
    settings.ensure_dirs()
    return settings


@contextlib.contextmanager
def throwaway_database(prefix: str = "shelfguard_test") -> Iterator[str]:
    """A new database on the local PostgreSQL (its URL), dropped on exit; its name is
    ``prefix`` and a random suffix."""
    import sqlalchemy as sa

    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        require_service("PostgreSQL", str(exc).splitlines()[0])
    url = sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throw-away database on the local PostgreSQL, shared by the session."""
    with throwaway_database() as url:
        yield url


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A throw-away database of this test alone."""
    with throwaway_database() as url:
        yield url


# The groups that take longest (minutes of one worker, measured with --durations), longest
# first. Sent to the workers first (``--no-loadscope-reorder`` keeps this order), so the
# short groups and the ``spread`` tests fill the gaps instead of a long group starting last.
LONGEST_GROUPS = (
    "e2e-test_retraining",  # ~16: two real fine-tunes and several tiny ones
    "e2e-test_write_audit_publish",  # ~9: six catalog_refresh runs
    "integration",  # ~5: Celery workers, PostgreSQL warehouse
    "training",  # ~4: real fine-tunes
    "e2e-test_catalog_refresh",
    "e2e-test_pseudonym_key",
    "faults",
    "e2e-test_abandoned_runs",
)


def _group(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("xdist_group")
    return str(marker.args[0]) if marker and marker.args else None


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n``, keep each test folder on one worker so its shared fixtures
    (a dbt build, a generated warehouse, a tiny model) are built once; tests marked
    ``spread`` are independent and go wherever a worker is free. The longest groups
    come first (:data:`LONGEST_GROUPS`)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if item.get_closest_marker("spread") or item.get_closest_marker("xdist_group"):
            continue
        path = Path(str(item.path))
        # End-to-end modules each build their own home: one group per module.
        group = f"e2e-{path.stem}" if path.parent.name == "e2e" else path.parent.name
        item.add_marker(pytest.mark.xdist_group(group))
    rank = {group: n for n, group in enumerate(LONGEST_GROUPS)}
    items.sort(key=lambda item: rank.get(_group(item) or "", len(rank)))  # stable


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail the run when ``--dist loadgroup`` does not group: every shared fixture (a real
    fine-tune among them) would then be built once per worker, doubling the run."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    ungrouped = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid.rsplit("]", 1)[-1]
    ]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not group {len(ungrouped)} tests (e.g. {ungrouped[0]}): "
            "check the pytest / pytest-xdist versions in constraints.txt"
        )
