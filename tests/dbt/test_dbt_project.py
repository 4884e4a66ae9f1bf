"""shelfguard.data.dbt_project: the environment, variables and parse step the orchestrator
hands to dbt."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from dbt_support import BuiltWarehouse, make_settings

from shelfguard.data.dbt_project import (
    PASSWORD_VAR,
    DbtError,
    build,
    dbt_env,
    dbt_vars,
    manifest_path,
    manifest_sha256,
    parse_project,
    project_dir,
)
from shelfguard.policy import Policy, Privacy


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the dbt project in a scratch checkout, so parsing never writes to the repo."""
    root = tmp_path / "checkout"
    shutil.copytree(
        project_dir(), root / "dbt_project", ignore=shutil.ignore_patterns("target", "logs")
    )
    monkeypatch.setenv("SHELFGUARD_PROJECT_DIR", str(root))
    return root / "dbt_project"


def test_project_layout() -> None:
    assert (project_dir() / "dbt_project.yml").is_file()
    assert (project_dir() / "profiles.yml").is_file()
    assert manifest_path() == project_dir() / "target" / "manifest.json"


def test_duckdb_env(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    env = dbt_env(settings)
    assert env == {
        "DBT_PROFILES_DIR": str(project_dir()),
        "SHELFGUARD_DBT_TARGET": "duckdb",
        "SHELFGUARD_DUCKDB_PATH": str(settings.duckdb_path),
        "SHELFGUARD_PSEUDONYM_KEY": "",
    }


def test_postgres_env_is_parsed_from_the_warehouse_url(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home",
        {"SHELFGUARD_WAREHOUSE_URL": "postgresql+psycopg2://svc:p%40ss@db.internal:6543/wh"},
    )
    env = dbt_env(settings)
    assert env["SHELFGUARD_DBT_TARGET"] == "postgres"
    assert env["SHELFGUARD_PG_HOST"] == "db.internal"
    assert env["SHELFGUARD_PG_PORT"] == "6543"
    assert env["SHELFGUARD_PG_USER"] == "svc"
    assert env["SHELFGUARD_PG_DBNAME"] == "wh"
    assert env[PASSWORD_VAR] == "p@ss"
    assert "SHELFGUARD_DUCKDB_PATH" not in env


def test_postgres_env_defaults(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home", {"SHELFGUARD_WAREHOUSE_URL": "postgresql://postgres@localhost/shop"}
    )
    env = dbt_env(settings)
    assert env["SHELFGUARD_PG_PORT"] == "5432"
    assert PASSWORD_VAR not in env


def test_the_pseudonym_key_never_reaches_dbt_and_the_policy_hash_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHELFGUARD_PSEUDONYM_KEY", "s3cret-s3cret-s3cret-s3cret-s3cret")
    settings = make_settings(tmp_path / "home")
    policy = Policy(version=1, sha256="ab" * 32)
    env = dbt_env(settings, policy)
    # Empty, so that it also blanks the key a dbt process would inherit from its worker.
    assert env["SHELFGUARD_PSEUDONYM_KEY"] == ""
    assert env["SHELFGUARD_POLICY_SHA256"] == "ab" * 32
    assert "s3cret" not in json.dumps(dbt_env(settings, policy, secrets=False))


def test_env_without_secrets_for_serialised_operator_arguments(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home", {"SHELFGUARD_WAREHOUSE_URL": "postgresql://svc:pw@db/wh"}
    )
    env = dbt_env(settings, secrets=False)
    assert PASSWORD_VAR not in env
    assert env["SHELFGUARD_PG_USER"] == "svc"


def test_vars_carry_the_policy_k() -> None:
    assert dbt_vars(Policy(version=1, privacy=Privacy(k_anonymity=7))) == {"k_anonymity": 7}


def test_parse_needs_no_database_and_keeps_no_key(
    project_copy: Path,
    tmp_path: Path,
    duckdb_warehouse: BuiltWarehouse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHELFGUARD_PSEUDONYM_KEY", "k3y-that-must-not-leak")
    # The warehouse folder does not even exist: parsing must not open or create it.
    missing = tmp_path / "none" / duckdb_warehouse.settings.duckdb_path.name
    settings = make_settings(
        tmp_path / "home", {"SHELFGUARD_WAREHOUSE_URL": f"duckdb:///{missing}"}
    )
    path = parse_project(settings)
    assert path == project_copy / "target" / "manifest.json"
    assert not missing.parent.exists()
    manifest = json.loads(path.read_text(encoding="utf-8"))
    names = {n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert {"dim_products", "fct_training_pairs", "fct_golden_judgements"} <= names
    assert len(names) == 14
    assert len(manifest["unit_tests"]) == 7
    # dbt's own target and logs (partial parse included) are under the home, private.
    work = settings.home / "dbt" / "parse"
    assert (work / "target" / "partial_parse.msgpack").is_file()
    for folder in (settings.home / "dbt", work):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    assert not (project_copy / "logs").exists()
    for root in (path.parent, settings.home):
        for artifact in root.rglob("*"):
            if artifact.is_file():
                assert b"k3y-that-must-not-leak" not in artifact.read_bytes(), artifact
    # Same project, same target: the manifest Cosmos renders from and the one the build
    # ran hash alike.
    assert manifest_sha256(path) == duckdb_warehouse.result.manifest_sha256

    unreachable = make_settings(
        tmp_path / "home-pg", {"SHELFGUARD_WAREHOUSE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    )
    assert parse_project(unreachable) == path


def test_a_broken_project_raises(project_copy: Path, tmp_path: Path) -> None:
    (project_copy / "models" / "marts" / "broken.sql").write_text("select {{ nope( }}\n")
    with pytest.raises(DbtError, match="dbt parse failed"):
        parse_project(make_settings(tmp_path / "home"))


def test_an_unreachable_warehouse_raises(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "home", {"SHELFGUARD_WAREHOUSE_URL": "postgresql://nobody@127.0.0.1:1/x"}
    )
    with pytest.raises(DbtError, match="could not run"):
        build(settings, Policy(version=1), select="stg_catalog__queries")
