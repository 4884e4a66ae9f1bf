"""Settings: embedded defaults, environment overrides, clear errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from shelfguard.config import SettingsError, load_settings, task_retry_delay


def test_embedded_defaults_live_under_home(tmp_path: Path) -> None:
    settings = load_settings({"SHELFGUARD_HOME": str(tmp_path / "h")})
    home = (tmp_path / "h").resolve()
    assert settings.home == home
    assert settings.warehouse_url == f"duckdb:///{home / 'warehouse.duckdb'}"
    assert settings.duckdb_path == home / "warehouse.duckdb"
    assert settings.ledger_url == f"sqlite:///{home / 'ledger.sqlite'}"
    assert settings.artifact_root == str(home / "artifacts")
    assert settings.airflow_home == home / "airflow"
    assert (settings.training_backend, settings.approval_backend) == ("local", "ledger")


def test_two_homes_share_nothing(tmp_path: Path) -> None:
    a = load_settings({"SHELFGUARD_HOME": str(tmp_path / "a")})
    b = load_settings({"SHELFGUARD_HOME": str(tmp_path / "b")})
    paths_a = {
        a.warehouse_url,
        a.ledger_url,
        a.artifact_root,
        str(a.airflow_home),
        str(a.landing_dir),
    }
    paths_b = {
        b.warehouse_url,
        b.ledger_url,
        b.artifact_root,
        str(b.airflow_home),
        str(b.landing_dir),
    }
    assert not paths_a & paths_b


def test_overrides_switch_backends_without_code(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SHELFGUARD_HOME": str(tmp_path),
            "SHELFGUARD_WAREHOUSE_URL": "postgresql://postgres@127.0.0.1:5432/warehouse",
            "SHELFGUARD_LEDGER_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/ledger",
            "SHELFGUARD_ARTIFACT_ROOT": "s3://bucket/shelfguard",
            "SHELFGUARD_TRAINING_BACKEND": "kubernetes",
            "SHELFGUARD_APPROVAL_BACKEND": "hitl",
        }
    )
    assert settings.warehouse_kind == "postgresql"
    assert settings.ledger_url.startswith("postgresql+psycopg2://")
    assert settings.artifact_root == "s3://bucket/shelfguard"
    assert (settings.training_backend, settings.approval_backend) == ("kubernetes", "hitl")
    with pytest.raises(SettingsError, match="not a DuckDB file"):
        _ = settings.duckdb_path


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (
            "SHELFGUARD_TRAINING_BACKEND",
            "gpu",
            "SHELFGUARD_TRAINING_BACKEND='gpu' is not one of local, kubernetes",
        ),
        (
            "SHELFGUARD_APPROVAL_BACKEND",
            "maybe",
            "SHELFGUARD_APPROVAL_BACKEND='maybe' is not one of ledger, hitl",
        ),
        ("SHELFGUARD_WAREHOUSE_URL", "mysql://x", "expected duckdb:///PATH or postgresql://"),
    ],
)
def test_bad_values_fail_with_the_setting_named(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings({"SHELFGUARD_HOME": str(tmp_path), name: value})
    assert message in str(excinfo.value)


def test_a_bare_postgresql_url_gets_the_installed_driver(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "SHELFGUARD_HOME": str(tmp_path),
            "SHELFGUARD_WAREHOUSE_URL": "postgresql://u@db:5432/warehouse",
            "SHELFGUARD_LEDGER_URL": "postgresql://u@db:5432/ledger",
        }
    )
    assert settings.warehouse_url == "postgresql+psycopg2://u@db:5432/warehouse"
    assert settings.ledger_url == "postgresql+psycopg2://u@db:5432/ledger"
    assert settings.warehouse_kind == "postgresql"


def test_the_task_retry_delay_is_the_dag_s_unless_set() -> None:
    two_minutes = timedelta(minutes=2)
    assert task_retry_delay(two_minutes, {}) == two_minutes
    assert task_retry_delay(two_minutes, {"SHELFGUARD_TASK_RETRY_SECONDS": "5"}) == timedelta(
        seconds=5
    )
    assert task_retry_delay(two_minutes, {"SHELFGUARD_TASK_RETRY_SECONDS": "0"}) == timedelta(0)
    for bad in ("soon", "-3", "1.5"):
        with pytest.raises(SettingsError, match="SHELFGUARD_TASK_RETRY_SECONDS"):
            task_retry_delay(two_minutes, {"SHELFGUARD_TASK_RETRY_SECONDS": bad})
