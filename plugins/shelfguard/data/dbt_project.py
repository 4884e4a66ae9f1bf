"""dbt glue: how the orchestrator runs the project in ``dbt_project/`` (no Airflow import).

The DAGs render the dbt project with Cosmos from ``target/manifest.json``
(:func:`parse_project` writes it) and hand every dbt process the environment of
:func:`dbt_env` and the variables of :func:`dbt_vars`; :func:`build` runs the whole
project (or a selection) in one go and reports every node, for the embedded runtime,
the CLI and the tests.

dbt runs as a subprocess, not through ``dbtRunner`` in this process: dbt reads its
settings from the process environment (``env_var()`` in ``profiles.yml``), so an
in-process call would have to mutate ``os.environ`` of an Airflow worker; and dbt-duckdb
keeps its DuckDB connection open at class level after an in-process invocation, holding
the warehouse file's lock until the interpreter exits. A subprocess gets its own
environment and releases the file when it ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shelfguard.config import Settings, project_root
from shelfguard.data.pseudonyms import PSEUDONYM_KEY_VAR
from shelfguard.policy import Policy

PROJECT_DIRNAME = "dbt_project"
# dbt scrubs variables with this prefix from its logs and artifacts.
PASSWORD_VAR = "DBT_ENV_SECRET_SHELFGUARD_PG_PASSWORD"

# Node statuses of run_results.json that mean "this node did not do its job".
FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
# Keys of manifest.json that change with the invocation, the checkout's location or the
# nodes selected, not with the project; left out of the manifest's lineage hash.
_VOLATILE_METADATA = (
    "generated_at",
    "invocation_id",
    "invocation_started_at",
    "run_started_at",
    "env",
)
_VOLATILE_NODE_KEYS = (
    "created_at",
    "root_path",
    "build_path",
    "compiled_path",
    "compiled",
    "compiled_code",
    "extra_ctes",
    "extra_ctes_injected",
    # A hook's position: dbt numbers on-run-start hooks from 0 when parsing and from 1
    # when running them.
    "index",
)
_LOG_TAIL_LINES = 40
# dbt's console script, run by this interpreter (so the same virtualenv, wherever it is).
_DBT_MAIN = "import sys; from dbt.cli.main import cli; sys.argv[0] = 'dbt'; sys.exit(cli())"


class DbtError(RuntimeError):
    """dbt could not run at all (invalid project, unreachable warehouse, crash).

    A failed model or test is not an error: :func:`build` reports it in its result.
    """


@dataclass(frozen=True)
class DbtNodeResult:
    """What happened to one node (model, data test, unit test, seed) in an invocation."""

    unique_id: str
    name: str
    resource_type: str
    status: str
    failures: int | None
    message: str | None
    execution_time: float
    relation_name: str | None
    attached_to: str | None

    @property
    def failed(self) -> bool:
        """The node errored, or a test failed at severity error (a warning is not a failure)."""
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class DbtBuildResult:
    """The outcome of one ``dbt build``: every node's status and the manifest it ran."""

    success: bool
    return_code: int
    target: str
    invocation_id: str
    elapsed_seconds: float
    nodes: tuple[DbtNodeResult, ...]
    manifest_sha256: str
    manifest_path: Path
    run_results_path: Path
    log_tail: str

    def failed_nodes(self) -> list[DbtNodeResult]:
        """Nodes that errored or failed (skipped descendants are not listed)."""
        return [node for node in self.nodes if node.failed]

    def test_failures(self) -> dict[str, int]:
        """Failing-row counts of the data tests that failed or warned, by test name."""
        return {
            node.name: node.failures or 0
            for node in self.nodes
            if node.resource_type == "test" and node.status in {"fail", "warn"}
        }

    def counts(self) -> dict[str, int]:
        """How many nodes ended in each status."""
        totals: dict[str, int] = {}
        for node in self.nodes:
            totals[node.status] = totals.get(node.status, 0) + 1
        return dict(sorted(totals.items()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, for the ledger's gate metrics and reports."""
        data = asdict(self)
        data["manifest_path"] = str(self.manifest_path)
        data["run_results_path"] = str(self.run_results_path)
        data["counts"] = self.counts()
        data["test_failures"] = self.test_failures()
        return data


def project_dir() -> Path:
    """The dbt project folder of the checkout (holds ``dbt_project.yml`` and ``profiles.yml``)."""
    return project_root() / PROJECT_DIRNAME


def manifest_path() -> Path:
    """Where :func:`parse_project` writes the manifest Cosmos renders the DAG from."""
    return project_dir() / "target" / "manifest.json"


def dbt_target(settings: Settings) -> str:
    """The ``profiles.yml`` output for the configured warehouse: ``duckdb`` or ``postgres``."""
    kind = settings.warehouse_kind
    if kind == "duckdb":
        return "duckdb"
    if kind == "postgresql":
        return "postgres"
    raise DbtError(f"no dbt target for warehouse {settings.warehouse_url!r}")


def _postgres_env(warehouse_url: str) -> dict[str, str]:
    from sqlalchemy.engine import make_url

    url = make_url(warehouse_url)
    env = {
        "SHELFGUARD_PG_HOST": url.host or "127.0.0.1",
        "SHELFGUARD_PG_PORT": str(url.port or 5432),
        "SHELFGUARD_PG_USER": url.username or "postgres",
        "SHELFGUARD_PG_DBNAME": url.database or "shelfguard",
    }
    if url.password is not None:
        env[PASSWORD_VAR] = str(url.password)
    return env


def dbt_env(
    settings: Settings,
    policy: Policy | None = None,
    *,
    secrets: bool = True,
) -> dict[str, str]:
    """The environment variables dbt needs on top of the process's own.

    The warehouse connection comes from ``settings.warehouse_url`` (``SHELFGUARD_DUCKDB_PATH``
    for DuckDB, ``SHELFGUARD_PG_*`` for PostgreSQL: host, port, user, password, database;
    options in the URL's query string are not passed on); ``profiles.yml`` reads them. With
    a ``policy``, its sha256 is added, and dbt tags every statement it sends with it.

    The pseudonymisation key is never given to dbt: ingest pseudonymises, and dbt reads
    the pseudonyms. A dbt process that Cosmos starts inherits the worker's environment,
    where the key is (ingest needs it), so the key's variable is set empty here: its
    value reaches neither dbt's environment nor its logs or partial-parse file.

    ``secrets=False`` leaves out the database password, for an environment that is stored
    or displayed (Airflow operator arguments are serialised into the metadata database
    and shown in the UI); the dbt process must then find it in its own environment
    (``DBT_ENV_SECRET_SHELFGUARD_PG_PASSWORD``).
    """
    target = dbt_target(settings)
    env = {
        "DBT_PROFILES_DIR": str(project_dir()),
        "SHELFGUARD_DBT_TARGET": target,
    }
    if target == "duckdb":
        env["SHELFGUARD_DUCKDB_PATH"] = str(settings.duckdb_path)
    else:
        env.update(_postgres_env(settings.warehouse_url))
    env[PSEUDONYM_KEY_VAR] = ""
    if not secrets:
        env.pop(PASSWORD_VAR, None)
    if policy is not None and policy.sha256:
        env["SHELFGUARD_POLICY_SHA256"] = policy.sha256
    return env


def dbt_vars(policy: Policy) -> dict[str, Any]:
    """The dbt variables the policy decides (``--vars``); the rest keep the project's defaults."""
    return {"k_anonymity": policy.privacy.k_anonymity}


def _run_dbt(
    args: Sequence[str], env: Mapping[str, str], timeout: float | None
) -> subprocess.CompletedProcess[str]:
    # The pseudonymisation key is not dbt's: it is left out of the environment altogether.
    process_env = {k: v for k, v in {**os.environ, **env}.items() if k != PSEUDONYM_KEY_VAR}
    command = [sys.executable, "-c", _DBT_MAIN, *args]
    try:
        return subprocess.run(
            command,
            cwd=project_dir(),
            env=process_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DbtError(f"dbt {args[0]} did not finish within {timeout} s") from exc


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_LOG_TAIL_LINES:])


def private_dir(path: Path) -> Path:
    """``path`` as a folder only its owner may enter (0700), created if missing.

    dbt's target and log folders hold compiled SQL, run results and logs of the
    warehouse's data: they live under the shelfguard home, never in a shared temp folder.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is masked by the umask, and the folder may be older
    return path


def dbt_dir(settings: Settings) -> Path:
    """``$SHELFGUARD_HOME/dbt``: dbt's target and log folders, private to the home's owner."""
    return private_dir(settings.home / "dbt")


def _common_flags(target_path: Path, log_path: Path) -> list[str]:
    return [
        "--project-dir",
        str(project_dir()),
        "--profiles-dir",
        str(project_dir()),
        "--target-path",
        str(target_path),
        "--log-path",
        str(log_path),
    ]


def parse_project(settings: Settings, timeout: float | None = 600) -> Path:
    """Run ``dbt parse`` and return the path of the ``target/manifest.json`` Cosmos reads.

    Parsing connects to no database (for either target); it only needs the environment
    ``profiles.yml`` reads. dbt parses into ``$SHELFGUARD_HOME/dbt/parse`` (its
    partial-parse file and logs stay there, private to the home's owner); the manifest
    alone is copied to the checkout's ``target/``. Raises :class:`DbtError` when the
    project does not parse.
    """
    work = private_dir(dbt_dir(settings) / "parse")
    target_path, written = work / "target", work / "target" / "manifest.json"
    written.unlink(missing_ok=True)
    args = ["parse", *_common_flags(target_path, work / "logs")]
    completed = _run_dbt(args, dbt_env(settings), timeout)
    if completed.returncode != 0 or not written.is_file():
        raise DbtError(
            f"dbt parse failed (exit {completed.returncode}):\n"
            f"{_tail(completed.stdout + completed.stderr)}"
        )
    manifest_path().parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(written, manifest_path())
    return manifest_path()


def manifest_sha256(path: Path) -> str:
    """The lineage hash of a manifest: same project and target, same hash.

    The file's bytes change on every invocation (timestamps, invocation id), with the
    checkout's location and with what was compiled, so the hash is taken over a
    canonical JSON without those keys. The manifest :func:`parse_project` writes and the
    one a :func:`build` of any selection writes then hash alike, and lineage records the
    project that ran rather than the moment it ran.
    """
    manifest = json.loads(path.read_text(encoding="utf-8"))
    metadata = manifest.get("metadata", {})
    for key in _VOLATILE_METADATA:
        metadata.pop(key, None)
    # Sections (nodes, sources, macros, ...) map unique ids to entries.
    for section in manifest.values():
        if not isinstance(section, dict):
            continue
        for entry in section.values():
            if not isinstance(entry, dict):
                continue
            for key in _VOLATILE_NODE_KEYS:
                entry.pop(key, None)
            # Filled in while compiling (adapter macros resolved); the macros' own code
            # is hashed in the macros section.
            depends_on = entry.get("depends_on")
            if isinstance(depends_on, dict):
                depends_on.pop("macros", None)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _node_results(run_results: dict[str, Any], manifest: dict[str, Any]) -> list[DbtNodeResult]:
    nodes = {**manifest.get("nodes", {}), **manifest.get("unit_tests", {})}
    results = []
    for item in run_results.get("results", []):
        unique_id = str(item["unique_id"])
        node = nodes.get(unique_id, {})
        failures = item.get("failures")
        results.append(
            DbtNodeResult(
                unique_id=unique_id,
                name=str(node.get("name") or unique_id.rsplit(".", 1)[-1]),
                resource_type=str(node.get("resource_type") or unique_id.split(".", 1)[0]),
                status=str(item.get("status")),
                failures=int(failures) if failures is not None else None,
                message=item.get("message"),
                execution_time=float(item.get("execution_time") or 0.0),
                relation_name=item.get("relation_name") or node.get("relation_name"),
                attached_to=node.get("attached_node") or node.get("model"),
            )
        )
    return sorted(results, key=lambda node: node.unique_id)


def build(
    settings: Settings,
    policy: Policy,
    select: str | Sequence[str] | None = None,
    *,
    target_path: Path | None = None,
    timeout: float | None = 3600,
    candidate_batch: str | None = None,
    marts_schema: str | None = None,
) -> DbtBuildResult:
    """Run ``dbt build`` (models, data tests, unit tests) and report every node.

    ``select`` is a dbt selection (``"marts"``, ``["+dim_products"]``); default: the whole
    project. Artifacts go to ``target_path`` (default ``$SHELFGUARD_HOME/dbt/target``,
    not the checkout, so that concurrent runs and Cosmos' manifest do not collide), logs
    to the folder beside it; both are private to the home's owner (0700). Failed models
    and tests are reported in the result (``success`` False); :class:`DbtError` is raised
    only when dbt could not run at all.

    Staging reads the raw files of published batches only (write-audit-publish); a
    ``candidate_batch`` is read besides them, and ``marts_schema`` (a
    ``snapshot_<16 hex>`` schema) receives the marts instead of ``marts``.
    """
    from shelfguard.data.publication import dbt_vars as publication_vars

    target_path = private_dir(target_path or dbt_dir(settings) / "target")
    private_dir(target_path.parent / "logs")
    run_results_path = target_path / "run_results.json"
    run_results_path.unlink(missing_ok=True)
    args = [
        "build",
        *_common_flags(target_path, target_path.parent / "logs"),
        "--vars",
        json.dumps(
            {**dbt_vars(policy), **publication_vars(candidate_batch, marts_schema)},
            sort_keys=True,
        ),
    ]
    if select:
        args += ["--select", *([select] if isinstance(select, str) else select)]
    started = time.monotonic()
    completed = _run_dbt(args, dbt_env(settings, policy), timeout)
    elapsed = time.monotonic() - started
    log_tail = _tail(completed.stdout + completed.stderr)
    if completed.returncode not in (0, 1) or not run_results_path.is_file():
        raise DbtError(f"dbt build could not run (exit {completed.returncode}):\n{log_tail}")

    run_results = json.loads(run_results_path.read_text(encoding="utf-8"))
    manifest_file = target_path / "manifest.json"
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    nodes = _node_results(run_results, manifest)
    return DbtBuildResult(
        success=completed.returncode == 0 and not any(node.failed for node in nodes),
        return_code=completed.returncode,
        target=dbt_target(settings),
        invocation_id=str(run_results.get("metadata", {}).get("invocation_id", "")),
        elapsed_seconds=round(elapsed, 3),
        nodes=tuple(nodes),
        manifest_sha256=manifest_sha256(manifest_file),
        manifest_path=manifest_file,
        run_results_path=run_results_path,
        log_tail=log_tail,
    )
