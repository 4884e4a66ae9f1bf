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
| ``SHELFGUARD_APPROVAL_BACKEND`` | ``ledger`` | how a required approval is asked: ``ledger``
  (``shelfguard approve`` / ``reject``) or ``hitl`` (Airflow's ApprovalOperator) |
| ``SHELFGUARD_LANDING_DIR`` | ``$HOME/landing`` | where ``catalog_refresh`` looks for files |
| ``SHELFGUARD_TASK_RETRY_SECONDS`` | per DAG (60 / 120) | wait before a failed task's one retry |

Kubernetes (``SHELFGUARD_TRAINING_BACKEND=kubernetes``) reads ``SHELFGUARD_K8S_*``:
see :class:`KubernetesSettings`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

TRAINING_BACKENDS = ("local", "kubernetes")
APPROVAL_BACKENDS = ("ledger", "hitl")


class SettingsError(ValueError):
    """A setting has a value shelfguard cannot use."""


def project_root() -> Path:
    """The repository checkout: the folder holding ``dags/`` and ``dbt_project/``."""
    override = os.environ.get("SHELFGUARD_PROJECT_DIR")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class KubernetesSettings:
    """Where and how the training and bulk-embedding pods run (production backend)."""

    namespace: str = "shelfguard"
    image: str = "shelfguard-train:0.1.0"
    service_account: str = "shelfguard-train"
    gpu_count: int = 1
    cpu: str = "4"
    memory: str = "16Gi"
    node_selector: dict[str, str] = field(
        default_factory=lambda: {"nvidia.com/gpu.present": "true"}
    )
    tolerations: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    #: Kubernetes Secret whose keys become the pod's environment (object-store credentials).
    env_secret: str = "shelfguard-artifacts"
    startup_timeout_seconds: int = 600
    execution_timeout_minutes: int = 180
    kubernetes_conn_id: str = "kubernetes_default"


@dataclass(frozen=True)
class Settings:
    """Where shelfguard keeps its state and which backends it uses."""

    home: Path
    warehouse_url: str
    ledger_url: str
    artifact_root: str
    training_backend: str
    approval_backend: str
    landing_dir: Path
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)

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
        lineage = self.home / "lineage"  # the embedded OpenLineage file transport's folder
        for path in (self.home, self.airflow_home, self.reports_dir, self.landing_dir, lineage):
            path.mkdir(parents=True, exist_ok=True)
        if "://" not in self.artifact_root:
            Path(self.artifact_root).mkdir(parents=True, exist_ok=True)


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower()
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not one of {', '.join(allowed)}")
    return value


def _json_setting(env: Mapping[str, str], name: str, kind: type, default: Any) -> Any:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, kind):
        raise SettingsError(f"{name} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def task_retry_delay(default: timedelta, env: Mapping[str, str] | None = None) -> timedelta:
    """How long a failed task waits for its retry: ``SHELFGUARD_TASK_RETRY_SECONDS``
    (seconds, 0 or more) when set, else the DAG's ``default``. Read when a DAG file is
    parsed; raises :class:`SettingsError` for a value that is not a whole number."""
    env = os.environ if env is None else env
    seconds = _int_setting(env, "SHELFGUARD_TASK_RETRY_SECONDS", -1)
    return default if seconds < 0 else timedelta(seconds=seconds)


def _int_setting(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc
    if value < 0:
        raise SettingsError(f"{name}={raw!r} must not be negative")
    return value


def load_kubernetes_settings(env: Mapping[str, str]) -> KubernetesSettings:
    """``SHELFGUARD_K8S_*`` variables over the defaults of :class:`KubernetesSettings`."""
    base = KubernetesSettings()
    return KubernetesSettings(
        namespace=env.get("SHELFGUARD_K8S_NAMESPACE") or base.namespace,
        image=env.get("SHELFGUARD_TRAINING_IMAGE") or base.image,
        service_account=env.get("SHELFGUARD_K8S_SERVICE_ACCOUNT") or base.service_account,
        gpu_count=_int_setting(env, "SHELFGUARD_K8S_GPUS", base.gpu_count),
        cpu=env.get("SHELFGUARD_K8S_CPU") or base.cpu,
        memory=env.get("SHELFGUARD_K8S_MEMORY") or base.memory,
        node_selector=_json_setting(env, "SHELFGUARD_K8S_NODE_SELECTOR", dict, base.node_selector),
        tolerations=_json_setting(env, "SHELFGUARD_K8S_TOLERATIONS", list, base.tolerations),
        env_secret=env.get("SHELFGUARD_K8S_ENV_SECRET") or base.env_secret,
        startup_timeout_seconds=_int_setting(
            env, "SHELFGUARD_K8S_STARTUP_TIMEOUT_SECONDS", base.startup_timeout_seconds
        ),
        execution_timeout_minutes=_int_setting(
            env, "SHELFGUARD_K8S_EXECUTION_TIMEOUT_MINUTES", base.execution_timeout_minutes
        ),
        kubernetes_conn_id=env.get("SHELFGUARD_K8S_CONN_ID") or base.kubernetes_conn_id,
    )


def _psycopg2(url: str) -> str:
    """``postgresql://`` with the driver this project installs (SQLAlchemy 2.1's default
    for a bare scheme is psycopg 3, which it does not)."""
    return (
        "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        if url.startswith("postgresql://")
        else url
    )


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
        warehouse_url=_psycopg2(warehouse_url),
        ledger_url=_psycopg2(
            env.get("SHELFGUARD_LEDGER_URL") or f"sqlite:///{home / 'ledger.sqlite'}"
        ),
        artifact_root=env.get("SHELFGUARD_ARTIFACT_ROOT") or str(home / "artifacts"),
        training_backend=_choice(env, "SHELFGUARD_TRAINING_BACKEND", "local", TRAINING_BACKENDS),
        approval_backend=_choice(env, "SHELFGUARD_APPROVAL_BACKEND", "ledger", APPROVAL_BACKENDS),
        landing_dir=Path(env.get("SHELFGUARD_LANDING_DIR") or home / "landing").resolve(),
        kubernetes=load_kubernetes_settings(env),
    )
