"""docker-compose.yml and the Dockerfile, checked without Docker (deploy/validate_compose.py).

The validator runs the installed ``airflow``, ``celery`` and ``shelfguard`` with ``--help``
to check every command the services run; each distinct call is made once per session.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"


def _load_validator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "validate_compose", REPO / "deploy" / "validate_compose.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


validator = _load_validator()


# The secrets compose requires (`${VAR:?...}`), as a deployment's .env would set them.
SECRETS = {
    "POSTGRES_PASSWORD": "test-postgres-password",
    "AIRFLOW_DB_PASSWORD": "test-airflow-password",
    "LEDGER_DB_PASSWORD": "test-ledger-password",
    "WAREHOUSE_DB_PASSWORD": "test-warehouse-password",
    "MARQUEZ_DB_PASSWORD": "test-marquez-password",
    "REDIS_PASSWORD": "test-redis-password",
    "AIRFLOW_FERNET_KEY": "dGVzdC1vbmx5LWZlcm5ldC1rZXktMzItYnl0ZXMhISE=",
    "AIRFLOW_JWT_SECRET": "test-jwt-secret",
    "AIRFLOW_API_SECRET_KEY": "test-api-secret",
    "AIRFLOW_PASSWORD_ADMIN": "test-admin",
    "AIRFLOW_PASSWORD_GOVERNANCE_OWNER": "test-governance",
    "AIRFLOW_PASSWORD_DATA_ENGINEER": "test-engineer",
    "SHELFGUARD_PSEUDONYM_KEY": "test-pseudonym-key-of-at-least-32-characters",
}
REQUIRED = "set {name} in .env (see .env.example)"


# What pyproject.toml's `production` extra installs (the image has it; `make` does not).
PRODUCTION_MODULES = ("airflow.providers.celery", "redis", "asyncpg")


@pytest.fixture(scope="module", autouse=True)
def production_extra() -> None:
    """The workers' commands and the drivers can only be checked with the extra installed."""
    missing = [m for m in PRODUCTION_MODULES if importlib.util.find_spec(m) is None]
    if not missing:
        return
    message = (
        f"{', '.join(missing)} not installed: pip install -c constraints.txt -e '.[production]'"
    )
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def compose_data() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def test_the_compose_file_has_no_problems() -> None:
    assert validator.validate_compose(COMPOSE, env=SECRETS) == []


def test_every_secret_is_required_and_has_no_default(compose_data: dict[str, Any]) -> None:
    refs = {
        ref.name: (ref.op, ref.arg)
        for text in validator.strings(compose_data)
        for ref in validator.var_refs(text)
    }
    for name in SECRETS:
        assert refs[name] == (":?", REQUIRED.format(name=name)), name
    env_example = validator.read_env_example(REPO / ".env.example")
    assert {name: env_example.values[name] for name in SECRETS} == dict.fromkeys(SECRETS, "")


def test_without_its_secrets_compose_refuses_and_so_does_validation() -> None:
    # .env.example sets them empty: as if .env were a copy of it, nothing filled in.
    problems = validator.validate_compose(COMPOSE)
    assert problems == sorted(
        f"${{{name}}} is required: {REQUIRED.format(name=name)}" for name in SECRETS
    )
    partial = {**SECRETS, "SHELFGUARD_PSEUDONYM_KEY": ""}
    assert validator.validate_compose(COMPOSE, env=partial) == [
        "${SHELFGUARD_PSEUDONYM_KEY} is required: "
        + REQUIRED.format(name="SHELFGUARD_PSEUDONYM_KEY")
    ]


def test_each_airflow_service_runs_its_component(compose_data: dict[str, Any]) -> None:
    commands = {
        name: service.get("command")
        for name, service in compose_data["services"].items()
        if name.startswith("airflow-")
    }
    assert commands == {
        "airflow-init": ["bash", "/opt/shelfguard/deploy/airflow-init.sh"],
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker-1": "celery worker",
        "airflow-worker-2": "celery worker",
    }
    env = compose_data["services"]["airflow-worker-1"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["SHELFGUARD_TRAINING_BACKEND"] == "${SHELFGUARD_TRAINING_BACKEND:-kubernetes}"
    assert env["SHELFGUARD_APPROVAL_BACKEND"] == "${SHELFGUARD_APPROVAL_BACKEND:-hitl}"


def test_the_image_is_the_installed_airflow_pinned() -> None:
    dockerfile = validator.read_dockerfile(REPO / "Dockerfile")
    assert re.fullmatch(
        rf"apache/airflow:(slim-)?{re.escape(version('apache-airflow'))}-python3\.11",
        dockerfile.base,
    )
    assert dockerfile.env["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] == "False"
    assert dockerfile.env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/shelfguard/dags"
    assert dockerfile.env["AIRFLOW__CORE__PLUGINS_FOLDER"] == "/opt/shelfguard/plugins"


def test_interpolation_follows_compose() -> None:
    values = {"SET": "value", "EMPTY": ""}
    assert validator.resolve("${SET:-x} ${EMPTY:-x} ${EMPTY-x} ${UNSET-x}", values) == (
        "value x  x"
    )
    assert validator.resolve("$${HOSTNAME} ${SET:+on}${UNSET:+on}", values) == "${HOSTNAME} on"
    assert [ref.name for ref in validator.var_refs("a$$B ${C:-d} $E")] == ["C", "E"]
    assert validator.resolve("${SET:?msg} ${EMPTY?msg}", values) == "value "
    for text, name in (("${EMPTY:?set it}", "EMPTY"), ("x ${UNSET?set it}", "UNSET")):
        with pytest.raises(validator.MissingVariable, match=rf"\$\{{{name}\}} is required: set it"):
            validator.resolve(text, values)


def test_dockerignore_matching() -> None:
    patterns = [".git/", "**/__pycache__/", "tests/", ".env", "!tests/keep"]
    assert validator.dockerignored("plugins/shelfguard/__pycache__/x.pyc", patterns)
    assert validator.dockerignored(".env", patterns)
    assert not validator.dockerignored(".env.example", patterns)
    assert not validator.dockerignored("tests/keep", patterns)
    assert not validator.dockerignored("plugins", patterns)


def _service(name: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda data: data["services"][name]


def _set(data: dict[str, Any], service: str, key: str, value: Any) -> None:
    # Assign, never mutate in place: YAML anchors make services share the same objects.
    data["services"][service] = {**data["services"][service], key: value}


def _add_env(data: dict[str, Any], service: str, **env: str) -> None:
    _set(data, service, "environment", {**data["services"][service]["environment"], **env})


def _set_env_everywhere(data: dict[str, Any], **env: str) -> None:
    for name, service in list(data["services"].items()):
        if "build" in service:  # the Airflow services
            _add_env(data, name, **env)


def _set_users(data: dict[str, Any], users: str) -> None:
    _set_env_everywhere(data, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=users)


def _drop(data: dict[str, Any], service: str, key: str) -> None:
    data["services"][service] = {k: v for k, v in data["services"][service].items() if k != key}


# What to break, and every problem the validator must report for it (and nothing else).
BREAKAGES: dict[str, tuple[Callable[[dict[str, Any]], None], tuple[str, ...]]] = {
    "result backend without a driver (SQLAlchemy 2.1 would pick psycopg 3)": (
        lambda d: _set_env_everywhere(
            d,
            AIRFLOW__CELERY__RESULT_BACKEND=(
                "db+postgresql://airflow:${AIRFLOW_DB_PASSWORD:?"
                + REQUIRED.format(name="AIRFLOW_DB_PASSWORD")
                + "}@postgres:5432/airflow"
            ),
        ),
        ("AIRFLOW__CELERY__RESULT_BACKEND: needs the Python module psycopg",),
    ),
    "depends on a missing service": (
        lambda d: _set(
            d,
            "airflow-scheduler",
            "depends_on",
            {"airflow-ghost": {"condition": "service_healthy"}},
        ),
        ("airflow-scheduler: depends_on airflow-ghost, which is not a service",),
    ),
    "unknown depends_on condition": (
        lambda d: _set(d, "airflow-scheduler", "depends_on", {"postgres": {"condition": "ready"}}),
        ("depends_on postgres with unknown condition 'ready'",),
    ),
    "misspelt airflow subcommand": (
        lambda d: _set(d, "airflow-triggerer", "command", "trigerer"),
        ("airflow-triggerer: `airflow trigerer` is not a working command",),
    ),
    "misspelt option": (
        lambda d: _set(d, "airflow-worker-2", "command", "celery worker --concurency 4"),
        ("airflow-worker-2: `airflow celery worker` has no option --concurency",),
    ),
    "undeclared volume": (
        lambda d: d.update(volumes={k: v for k, v in d["volumes"].items() if k != "airflow-auth"}),
        ("volume airflow-auth is not declared under top-level volumes",),
    ),
    "missing healthcheck": (
        lambda d: _drop(d, "airflow-dag-processor", "healthcheck"),
        ("airflow-dag-processor: long-running service without a healthcheck",),
    ),
    "hard-coded password": (
        lambda d: _set(d, "redis", "environment", {"REDISCLI_AUTH": "hunter2"}),
        ("redis: REDISCLI_AUTH is a literal secret",),
    ),
    "a secret with a public default": (
        lambda d: _set(d, "redis", "environment", {"REDISCLI_AUTH": "${REDIS_PASSWORD:-redis}"}),
        ("${REDIS_PASSWORD} is a secret with a default; require it instead",),
    ),
    "undocumented variable without default": (
        lambda d: _add_env(d, "postgres", POSTGRES_PASSWORD="${PG_SUPERUSER_PASSWORD}"),
        ("${PG_SUPERUSER_PASSWORD} has no default and is not in .env.example",),
    ),
    "unknown shelfguard setting": (
        lambda d: _add_env(d, "airflow-scheduler", SHELFGUARD_WAREHOUSE="postgres"),
        ("airflow-scheduler: SHELFGUARD_WAREHOUSE is not a setting shelfguard reads",),
    ),
    "script the image does not contain": (
        lambda d: _set(d, "airflow-init", "command", ["bash", "/opt/shelfguard/deploy/nope.sh"]),
        (
            "airflow-init: runs /opt/shelfguard/deploy/nope.sh, "
            "which no COPY in the Dockerfile puts in the image",
        ),
    ),
    "hitl approvals with the development policy": (
        lambda d: _set_env_everywhere(d, SHELFGUARD_POLICY="/opt/shelfguard/governance.yml"),
        ("governance.yml: approval.mode auto, which the hitl backend refuses",),
    ),
    "a worker with another Fernet key": (
        lambda d: _add_env(
            d,
            "airflow-worker-1",
            AIRFLOW__CORE__FERNET_KEY="${AIRFLOW_JWT_SECRET:?"
            + REQUIRED.format(name="AIRFLOW_JWT_SECRET")
            + "}",
        ),
        ("AIRFLOW__CORE__FERNET_KEY differs between the Airflow services",),
    ),
    "approver without a UI account": (
        lambda d: _set_users(d, "admin:admin,data-engineer:op"),
        ("approver governance-owner (policy) is not a UI user with role user or above",),
    ),
    "lineage sent to a service that is not there": (
        lambda d: d["services"].pop("marquez"),
        ("service marquez is missing", "lineage goes to 'marquez', which is not a service"),
    ),
    "search service on another ledger": (
        lambda d: _add_env(d, "search", SHELFGUARD_LEDGER_URL="sqlite:////tmp/other.sqlite"),
        ("search: its ledger_url is not",),
    ),
    "search service option serve does not take": (
        lambda d: _set(
            d, "search", "entrypoint", ["shelfguard", "serve", "--prot", "8000", "--port", "8000"]
        ),
        ("search: `shelfguard serve` has no option --prot",),
    ),
    "search image without the training package": (
        lambda d: _set(d, "search", "build", {"context": ".", "dockerfile": "Dockerfile"}),
        ("search: its image needs the training package (INSTALL_TRAINING: true)",),
    ),
    "search healthcheck on another port": (
        lambda d: _set(
            d, "search", "healthcheck", {"test": ["CMD", "curl", "http://localhost:9/readyz"]}
        ),
        ("search: its healthcheck does not ask localhost:8000/readyz",),
    ),
    "role SimpleAuthManager does not have": (
        lambda d: _set_users(d, "admin:admin,governance-owner:approver,data-engineer:op"),
        (
            "user governance-owner: role 'approver' is not one of viewer, user, op, admin",
            "approver governance-owner (policy) is not a UI user with role user or above",
        ),
    ),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_reference_is_reported(tmp_path: Path, breakage: str) -> None:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    breaks, expected = BREAKAGES[breakage]
    breaks(data)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    problems = validator.validate_compose(broken, project_dir=REPO, env=SECRETS)

    for fragment in expected:
        assert any(fragment in problem for problem in problems), (fragment, problems)
    assert all(any(f in problem for f in expected) for problem in problems), problems


def test_a_broken_dockerfile_is_reported(tmp_path: Path) -> None:
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^FROM apache/airflow:\S+$", "FROM apache/airflow:3.2.0-python3.11", text)
    text += "\nCOPY --chown=airflow:0 no-such-file.txt ./\nCOPY tests ./tests\n"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text, encoding="utf-8")
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    for name, service in data["services"].items():
        if "build" in service:
            _set(data, name, "build", {**service["build"], "dockerfile": str(dockerfile)})
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

    problems = validator.validate_compose(broken, project_dir=REPO, env=SECRETS)

    airflow = version("apache-airflow")
    expected = [
        f"Dockerfile: FROM apache/airflow:3.2.0-python3.11, but this environment has Airflow {airflow}",
        f"Dockerfile: FROM apache/airflow:3.2.0-python3.11, but constraints.txt pins Airflow {airflow}",
        "Dockerfile: COPY no-such-file.txt, which does not exist",
        "Dockerfile: COPY tests, which .dockerignore excludes",
    ]
    assert sorted(problems) == sorted(expected)


def test_the_production_policy_may_only_differ_in_approval_mode(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    for name in ("Dockerfile", ".dockerignore", ".env.example", "constraints.txt"):
        (project / name).write_text((REPO / name).read_text(encoding="utf-8"), encoding="utf-8")
    (project / "governance.yml").write_text(
        (REPO / "governance.yml")
        .read_text(encoding="utf-8")
        .replace("k_anonymity: 5", "k_anonymity: 7"),
        encoding="utf-8",
    )
    for name in ("plugins", "dags", "dbt_project", "expectations", "training", "deploy"):
        (project / name).symlink_to(REPO / name)
    for name in ("README.md", "pyproject.toml"):
        (project / name).symlink_to(REPO / name)
    (project / "docker-compose.yml").symlink_to(COMPOSE)

    problems = validator.validate_compose(project / "docker-compose.yml", env=SECRETS)

    assert problems == [
        "governance.production.yml: differs from governance.yml in more than approval.mode"
    ]
