"""Settings: one typed object, embedded defaults, environment overrides.

Every piece of local state lives under ``SHELFGUARD_HOME`` (default
``./.shelfguard``), so two homes never touch each other. Each service can be
pointed elsewhere with its own variable; switching from the embedded default to
production is a matter of settings, never of code.

| variable | default | meaning |
|---|---|---|
| ``SHELFGUARD_HOME`` | ``./.shelfguard`` | all local state |
| ``SHELFGUARD_WAREHOUSE_URL`` | ``duckdb:///$HOME/warehouse.duckdb`` | raw / staging / marts |
| ``SHELFGUARD_LEDGER_URL`` | ``sqlite:///$HOME/ledger.sqlite`` | governance ledger (SQLAlchemy URL) |
| ``SHELFGUARD_ARTIFACT_ROOT`` | ``$HOME/artifacts`` | models, indexes (path or fsspec URL) |
| ``SHELFGUARD_TRAINING_BACKEND`` | ``local`` | ``local`` subprocess or ``kubernetes`` pod |
| ``SHELFGUARD_APPROVAL`` | ``auto`` | ``auto`` (embedded dev only) or ``required`` |
| ``SHELFGUARD_LANDING_DIR`` | ``$HOME/landing`` | where ``catalog_refresh`` looks for files |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TRAINING_BACKENDS = ("local", "kubernetes")
APPROVAL_POLICIES = ("auto", "required")


class SettingsError(ValueError):
    """A setting has a value shelfguard cannot use."""


def project_root() -> Path:
    """The repository checkout: the folder holding ``dags/`` and ``dbt_project/``."""
    override = os.environ.get("SHELFGUARD_PROJECT_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Where shelfguard keeps its state and which backends it uses."""

    home: Path
    warehouse_url: str
    ledger_url: str
    artifact_root: str
    training_backend: str
    approval_policy: str
    landing_dir: Path

    @property
    def airflow_home(self) -> Path:
        """Airflow's own state (metadata DB, logs) for the embedded runtime."""
        return self.home / "airflow"

    @property
    def reports_dir(self) -> Path:
        """Governance reports, one folder per run."""
        return self.home / "reports"

    @property
    def warehouse_kind(self) -> str:
        """``duckdb`` or ``postgresql``, read from the warehouse URL's scheme."""
        scheme = self.warehouse_url.split(":", 1)[0]
        return "postgresql" if scheme.startswith("postgres") else scheme

    @property
    def duckdb_path(self) -> Path:
        """The DuckDB file of the warehouse (only for a ``duckdb://`` URL)."""
        if self.warehouse_kind != "duckdb":
            raise SettingsError(f"warehouse is {self.warehouse_url!r}, not a DuckDB file")
        return Path(self.warehouse_url.removeprefix("duckdb:///"))

    def ensure_dirs(self) -> None:
        """Create the local folders this configuration writes to."""
        for path in (self.home, self.airflow_home, self.reports_dir, self.landing_dir):
            path.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    home = Path(env.get("SHELFGUARD_HOME") or ".shelfguard").expanduser().resolve()
    warehouse_url = env.get("SHELFGUARD_WAREHOUSE_URL") or f"duckdb:///{home / 'warehouse.duckdb'}"
    if not warehouse_url.startswith(("duckdb:///", "postgresql://", "postgresql+psycopg2://")):
        raise SettingsError(
            f"SHELFGUARD_WAREHOUSE_URL={warehouse_url!r}: expected duckdb:///PATH or postgresql://..."
        )
    return Settings(
        home=home,
        warehouse_url=warehouse_url,
        ledger_url=env.get("SHELFGUARD_LEDGER_URL") or f"sqlite:///{home / 'ledger.sqlite'}",
        artifact_root=env.get("SHELFGUARD_ARTIFACT_ROOT") or str(home / "artifacts"),
        training_backend=_choice(env, "SHELFGUARD_TRAINING_BACKEND", "local", TRAINING_BACKENDS),
        approval_policy=_choice(env, "SHELFGUARD_APPROVAL", "auto", APPROVAL_POLICIES),
        landing_dir=Path(env.get("SHELFGUARD_LANDING_DIR") or home / "landing").resolve(),
    )
