"""The embedded runtime: real Airflow on one machine, no services.

Airflow's metadata lives in SQLite under ``$SHELFGUARD_HOME/airflow``; a DAG
runs with ``airflow dags test`` (every task in one process, no scheduler). The
outcome is read back from the ledger, never from Airflow's task states.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shelfguard.config import Settings, project_root
from shelfguard.ledger import RunRecord, open_ledger
from shelfguard.lineage import OPENLINEAGE_NAMESPACE, openlineage_transport
from shelfguard.progress import TaskEvent, TaskWatcher
from shelfguard.run_context import EMBEDDED_TRIGGER_ENV


class EmbeddedRunError(RuntimeError):
    """Airflow could not be set up or the DAG could not be started."""


def airflow_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment an embedded Airflow process runs with."""
    root = project_root()
    env = dict(os.environ if base is None else base)
    env.update(
        {
            "AIRFLOW_HOME": str(settings.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{settings.airflow_home / 'airflow.db'}",
            # A governance product makes no outside calls.
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            # Cosmos keeps dbt's partial-parse cache here rather than in the shared temp folder.
            "AIRFLOW__COSMOS__CACHE_DIR": str(cosmos_cache_dir(settings)),
            # The OpenLineage provider writes one JSON file per event under the home.
            "AIRFLOW__OPENLINEAGE__TRANSPORT": openlineage_transport(settings.home),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": OPENLINEAGE_NAMESPACE,
            "SCARF_ANALYTICS": "false",
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "SHELFGUARD_HOME": str(settings.home),
            "SHELFGUARD_WAREHOUSE_URL": settings.warehouse_url,
            "SHELFGUARD_LEDGER_URL": settings.ledger_url,
            "SHELFGUARD_ARTIFACT_ROOT": settings.artifact_root,
            "SHELFGUARD_LANDING_DIR": str(settings.landing_dir),
        }
    )
    return env


def cosmos_cache_dir(settings: Settings) -> Path:
    """Where Cosmos caches dbt's partial-parse file between tasks: under the home's
    private dbt folder (``$SHELFGUARD_HOME/dbt/cosmos``)."""
    return settings.home / "dbt" / "cosmos"


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def ensure_airflow_db(settings: Settings) -> None:
    """Create or upgrade the embedded Airflow metadata database (idempotent).

    A stamp naming the Airflow version skips the migration on later runs; a
    different Airflow version migrates again.
    """
    from importlib.metadata import version

    settings.ensure_dirs()
    stamp = settings.airflow_home / f".migrated-{version('apache-airflow')}"
    if stamp.exists() and (settings.airflow_home / "airflow.db").exists():
        return
    log = settings.airflow_home / "db-migrate.log"
    with log.open("wb") as out:
        result = subprocess.run(
            [_airflow_bin(), "db", "migrate"],
            env=airflow_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        raise EmbeddedRunError(f"airflow db migrate failed (exit {result.returncode}); see {log}")
    stamp.touch()


def ensure_dbt_manifest(settings: Settings) -> Path:
    """Parse the dbt project when its manifest is missing or older than any project file."""
    from shelfguard.data.dbt_project import manifest_path, parse_project, project_dir

    manifest = manifest_path()
    sources = [
        p
        for folder in ("models", "macros", "tests")
        for p in (project_dir() / folder).rglob("*")
        if p.is_file()
    ] + [project_dir() / "dbt_project.yml", project_dir() / "profiles.yml"]
    newest = max(p.stat().st_mtime for p in sources)
    if not manifest.exists() or manifest.stat().st_mtime < newest:
        parse_project(settings)
    return manifest


@dataclass(frozen=True)
class EmbeddedRun:
    """A finished embedded DAG run: its ledger record and where its log is."""

    run: RunRecord | None
    log_path: Path
    exit_code: int

    @property
    def outcome(self) -> str:
        """The ledger's outcome (ABANDONED when its process died), or FAILED when the run
        never reached the ledger."""
        if self.run is None or self.run.outcome == "RUNNING":
            return "FAILED"
        return self.run.outcome


def run_dag(
    settings: Settings,
    dag_id: str,
    conf: Mapping[str, Any] | None = None,
    *,
    on_line: Callable[[str], None] | None = None,
    on_task: Callable[[TaskEvent], None] | None = None,
    triggered_by: str | None = None,
) -> EmbeddedRun:
    """Run one DAG to the end with ``airflow dags test`` and return its ledger record.

    ``triggered_by`` (the local user running the command) reaches the run through the
    Airflow process's environment, never through its conf. One run per DAG per home:
    while another run of ``dag_id`` lives, this refuses at once, naming it
    (:class:`shelfguard.liveness.RunLock`); a run whose Airflow process exits before
    the run finished is recorded ``ABANDONED``. ``on_line`` receives every line Airflow
    prints (all of them go to the run's log, flushed line by line); ``on_task`` each
    task as it starts and ends (:class:`shelfguard.progress.TaskWatcher`).
    """
    from shelfguard.liveness import RUN_LOCK_ENV, AlreadyRunning, RunLock, abandon

    dag_file = project_root() / "dags" / f"{dag_id}.py"
    if not dag_file.is_file():
        known = sorted(p.stem for p in (project_root() / "dags").glob("*.py"))
        raise EmbeddedRunError(f"unknown DAG {dag_id!r}; known DAGs: {', '.join(known)}")
    if settings.approval_backend == "hitl":
        # `airflow dags test` never times a HITL task out and never returns while it waits.
        raise EmbeddedRunError(
            "SHELFGUARD_APPROVAL_BACKEND=hitl needs a running Airflow (api-server, scheduler): "
            "the embedded runner uses the ledger backend (shelfguard approve / reject)"
        )
    ensure_airflow_db(settings)
    ensure_dbt_manifest(settings)
    from shelfguard.data.dbt_project import private_dir

    private_dir(cosmos_cache_dir(settings))
    request_id = uuid.uuid4().hex
    payload = {**(conf or {}), "request_id": request_id}
    log_path = settings.home / "logs" / f"{dag_id}-{request_id[:8]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = airflow_env(settings)
    lock = RunLock(settings, dag_id, request_id)
    env[RUN_LOCK_ENV] = str(lock.path)
    env.pop(EMBEDDED_TRIGGER_ENV, None)
    if triggered_by:
        env[EMBEDDED_TRIGGER_ENV] = triggered_by
    # Airflow's own CLI, unchanged. A run blocked at a gate spends about a second per
    # level of tasks below it while `dags test` marks them upstream_failed.
    command = [
        sys.executable,
        "-m",
        "airflow",
        "dags",
        "test",
        dag_id,
        "-f",
        str(dag_file),
        "-c",
        json.dumps(payload),
    ]
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        raise EmbeddedRunError(str(exc)) from exc
    try:
        watcher = TaskWatcher(
            settings.airflow_home / "airflow.db", dag_id, request_id, on_task or (lambda _: None)
        )
        with (
            log_path.open("w", encoding="utf-8", buffering=1) as log,
            watcher,
            subprocess.Popen(
                command,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                pass_fds=(lock.fileno(),),  # Airflow holds the run's lock while it lives
            ) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if on_line:
                    on_line(line.rstrip("\n"))
            exit_code = proc.wait()
    finally:
        lock.release()
    ledger = open_ledger(settings.ledger_url)
    try:
        run = ledger.run_of_request(dag_id, request_id)
        if run is not None and run.outcome == "RUNNING":
            run = abandon(
                settings,
                ledger,
                run,
                f"the Airflow process exited (code {exit_code}) before the run finished",
            )
    finally:
        ledger.dispose()
    return EmbeddedRun(run=run, log_path=log_path, exit_code=exit_code)
