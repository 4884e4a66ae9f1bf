"""The production topology, run natively: Airflow 3 on CeleryExecutor, PostgreSQL, Redis.

What ``docker-compose.yml`` deploys, without Docker: the API server, scheduler,
DAG processor, triggerer and one Celery worker run as processes of this machine
against fresh PostgreSQL databases (Airflow metadata, ledger, warehouse) and a
Redis database as the broker, with SimpleAuthManager users and the production policy
(``approval.mode: required``, asked through Airflow's HITL). Through the REST API,
as the users would:

1. ``data-engineer`` triggers ``catalog_refresh`` on a generated batch: ingest into
   the PostgreSQL warehouse, the raw-data gate, dbt (Cosmos, target ``postgres``), the
   training-data gate, the marts published as Assets;
2. ``data-engineer`` triggers ``search_model_retraining`` with a tiny random BERT as
   the base model (1 epoch): export from PostgreSQL, local training, evaluation,
   embedding, index gate, then the ``approval`` task waits in ``awaiting_input``;
3. ``data-engineer`` may not answer it (403: not an assigned user); ``governance-owner``
   approves; the run promotes, and the ledger in PostgreSQL says so.

Schedules are switched off (``[scheduler] use_job_schedule = False``): unpausing
``catalog_refresh`` (``@hourly``, ``catchup=False``) would otherwise start a run for the
latest hour at once, and ``search_model_retraining`` a cron run and an Asset-triggered
run of the real model; runs here start only by the REST API. The Asset wiring is
still checked: the published marts queue events for ``search_model_retraining``.

Run it alone with ``pytest -m integration tests/integration/test_celery_topology.py``;
under ``CI=true`` an unreachable PostgreSQL or Redis fails it instead of skipping it.
Every process is stopped and every database dropped at the end, even on failure; the
logs stay under the test's ``tmp_path`` and their tails are printed when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
import yaml
from signing_support import approvers, signer
from tiny_model_support import tiny_model

from shelfguard.config import load_settings, project_root
from shelfguard.data.generator import generate
from shelfguard.ledger import open_ledger
from shelfguard.lineage import ledger_run_id
from shelfguard.policy_approval import approve

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.timeout(1200)]

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
# The broker: a database number of this Redis server is picked and flushed at the end.
REDIS_URL = os.environ.get("SHELFGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
USERS = {"admin": "admin", "governance-owner": "user", "data-engineer": "op"}
PRODUCTS = 300
SEED = 7
STARTUP_SECONDS = 240
REFRESH_SECONDS = 420
RETRAIN_SECONDS = 420
FINISH_SECONDS = 180
GRACE_SECONDS = 20
LOG_TAIL_LINES = 40


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(unreadable: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def redis_db(root_conftest: ModuleType) -> tuple[str, int]:
    """A database number of the local Redis that nobody uses (checked empty), and its URL."""
    import redis

    try:
        for number in range(15, 0, -1):
            client = redis.Redis.from_url(f"{REDIS_URL}/{number}", socket_timeout=5)
            try:
                if client.dbsize() == 0:
                    return f"{REDIS_URL}/{number}", number
            finally:
                client.close()
    except redis.RedisError as exc:
        root_conftest.require_service("Redis", str(exc).splitlines()[0])
    pytest.fail("no empty Redis database (1-15) to use as the Celery broker")


def flush_redis(number: int) -> None:
    import redis

    client = redis.Redis.from_url(f"{REDIS_URL}/{number}", socket_timeout=5)
    try:
        client.flushdb()
    except redis.RedisError:
        pass
    finally:
        client.close()


def write_policy(path: Path, timeout_minutes: float) -> Path:
    """The production policy, approvers [governance-owner], model thresholds opened.

    The tiny random model cannot meet the production floors; what this test checks is
    the topology and the governance path, as the end-to-end tests' ``write_policy`` does.
    """
    policy = yaml.safe_load((project_root() / "deploy" / "governance.production.yml").read_text())
    policy["evaluation"].update(
        floors={}, max_drop_vs_champion=1.0, max_slice_drop=1.0, first_run_must_beat=[]
    )
    policy["index"]["min_canary_hit_rate"] = 0.0
    policy["approval"].update(
        mode="required", approvers=approvers("governance-owner"), timeout_minutes=timeout_minutes
    )
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


@dataclass
class Stack:
    """The running services, their environment and logs, and a REST client per user."""

    root: Path
    env: dict[str, str]
    base_url: str
    passwords: dict[str, str]
    urls: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    reported: bool = False
    _tokens: dict[str, str] = field(default_factory=dict)

    @property
    def airflow_home(self) -> Path:
        return Path(self.env["AIRFLOW_HOME"])

    def run(self, name: str, *args: str, timeout: float = 600) -> None:
        log = self.logs / f"{name}.log"
        with log.open("wb") as out:
            done = subprocess.run(
                [AIRFLOW, *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
            )
        if done.returncode != 0:
            self.fail(f"airflow {' '.join(args)} exited {done.returncode}")

    def start(self, name: str, *args: str) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        # A session of its own: the service and its children (task runners, dbt, training)
        # are stopped together, by this process group's id.
        self.processes[name] = subprocess.Popen(
            [AIRFLOW, *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in self.processes.values():
            # Children of a service may outlive it: the whole group goes.
            _signal_group(proc, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=10)

    def diagnostics(self, failed_tasks: Iterable[str] = ()) -> str:
        """The services' log tails, then the logs of the failed tasks (else the latest)."""
        parts = [f"logs: {self.logs} (services), {self.airflow_home / 'logs'} (tasks)"]
        for log in sorted(self.logs.glob("*.log")):
            parts.append(f"----- {log.name} (last {LOG_TAIL_LINES} lines) -----\n{tail(log)}")
        task_logs = sorted(
            (self.airflow_home / "logs").glob("dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime
        )
        wanted = {f"task_id={task}" for task in failed_tasks}
        chosen = [log for log in task_logs if wanted & set(log.parts)] or task_logs[-4:]
        for log in chosen:
            rel = log.relative_to(self.airflow_home / "logs")
            parts.append(f"----- task log {rel} -----\n{tail(log, 3 * LOG_TAIL_LINES)}")
        return "\n".join(parts)

    def fail(self, message: str, failed_tasks: Iterable[str] = ()) -> None:
        self.reported = True
        pytest.fail(f"{message}\n{self.diagnostics(failed_tasks)}", pytrace=False)

    # --- REST API -------------------------------------------------------------------

    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = httpx.post(
                f"{self.base_url}/auth/token",
                json={"username": user, "password": self.passwords[user]},
                timeout=30,
            )
            assert response.status_code == 201, response.text
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "admin", **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.base_url}/api/v2{path}",
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=60,
            **kwargs,
        )

    def get(self, path: str, user: str = "admin") -> Any:
        response = self.api("GET", path, user)
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text}"
        return response.json()

    def wait(self, what: str, seconds: float, check: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    self.fail(f"{name} exited ({proc.returncode}) while waiting for {what}")
            result = check()
            if result:
                return result
            time.sleep(2)
        self.fail(f"timed out after {seconds:.0f} s waiting for {what}")

    def trigger(self, dag_id: str, conf: dict[str, Any], user: str) -> str:
        response = self.api(
            "POST", f"/dags/{dag_id}/dagRuns", user, json={"logical_date": None, "conf": conf}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def run_path(self, dag_id: str, run_id: str) -> str:
        return f"/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}"

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        found = self.get(f"{self.run_path(dag_id, run_id)}/taskInstances?limit=200")
        return {ti["task_id"]: ti["state"] for ti in found["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, seconds: float) -> None:
        def finished() -> bool:
            state = self.get(self.run_path(dag_id, run_id))["state"]
            if state == "failed":
                states = self.task_states(dag_id, run_id)
                self.fail(
                    f"{dag_id} run {run_id} failed; tasks: "
                    f"{json.dumps(states, indent=1, sort_keys=True)}",
                    [task for task, task_state in states.items() if task_state == "failed"],
                )
            return state == "success"

        self.wait(f"{dag_id} run {run_id} to succeed", seconds, finished)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _healthy(stack: Stack) -> bool:
    try:
        response = httpx.get(f"{stack.base_url}/api/v2/monitor/health", timeout=10)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    health = response.json()
    parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
    return all((health.get(part) or {}).get("status") == "healthy" for part in parts)


def _worker_ready(stack: Stack) -> bool:
    return " ready." in (stack.logs / "celery-worker.log").read_text(errors="replace")


@pytest.fixture
def stack(
    tmp_path: Path, create_database: Callable[[str], str], root_conftest: ModuleType
) -> Iterator[Stack]:
    broker_url, broker_db = redis_db(root_conftest)
    metadata_url = create_database("airflow")
    ledger_url = create_database("ledger")
    warehouse_url = create_database("wh")
    home, airflow_home, logs = tmp_path / "home", tmp_path / "airflow", tmp_path / "logs"
    for folder in (home, airflow_home, logs):
        folder.mkdir()
    passwords = {user: secrets.token_urlsafe(12) for user in USERS}
    passwords_file = airflow_home / "passwords.json"
    passwords_file.write_text(json.dumps(passwords), encoding="utf-8")
    policy = write_policy(tmp_path / "governance.yml", timeout_minutes=15)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    from cryptography.fernet import Fernet

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SHELFGUARD_"))}
    env.update(
        {
            # --- Airflow: docker-compose.yml's x-airflow-common environment ---
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            # The driver named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{user}:{role}" for user, role in USERS.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__DAGS_FOLDER": str(project_root() / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(project_root() / "plugins"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "SCARF_ANALYTICS": "false",
            "DO_NOT_TRACK": "1",
            # --- this test: runs only by the REST API (see the module docstring) ---
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            # A loaded 2-core machine: parse each DAG file once, give imports time.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
            "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "180",
            # Ports of their own: another Airflow on this machine must not collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # The tiny model trains fastest on one thread, and the CPU is shared.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            # --- shelfguard (plugins/shelfguard/config.py) ---
            "SHELFGUARD_HOME": str(home),
            "SHELFGUARD_LANDING_DIR": str(home / "landing"),
            "SHELFGUARD_LEDGER_URL": ledger_url,
            "SHELFGUARD_WAREHOUSE_URL": warehouse_url,
            "SHELFGUARD_POLICY": str(policy),
            "SHELFGUARD_APPROVAL_BACKEND": "hitl",
            "SHELFGUARD_TRAINING_BACKEND": "local",
            # Required with a PostgreSQL warehouse, as compose requires it from .env.
            "SHELFGUARD_PSEUDONYM_KEY": "celery-topology-test-pseudonym-key-32+",
        }
    )
    stack = Stack(
        root=tmp_path,
        env=env,
        base_url=base_url,
        passwords=passwords,
        urls={"ledger": ledger_url, "warehouse": warehouse_url, "metadata": metadata_url},
        logs=logs,
    )
    try:
        # What airflow-init does: migrations (the ledger's too) before any service starts.
        settings = load_settings(env)
        settings.ensure_dirs()
        ledger = open_ledger(ledger_url)
        # The governance owner signs the production policy into force (runs refuse it before).
        approve(ledger, policy, signer("governance-owner"), comment="production policy")
        ledger.dispose()
        from shelfguard.airflow.embedded import ensure_dbt_manifest

        ensure_dbt_manifest(settings)
        stack.run("db-migrate", "db", "migrate")
        stack.start(
            "api-server", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"
        )
        stack.start("scheduler", "scheduler")
        stack.start("dag-processor", "dag-processor")
        stack.start("triggerer", "triggerer")
        stack.start(
            "celery-worker",
            "celery",
            "worker",
            "--concurrency",
            "2",
            "--queues",
            "default",
            "--skip-serve-logs",
            "--without-gossip",
            "--without-mingle",
        )
        stack.wait(
            "the API server and every component healthy", STARTUP_SECONDS, lambda: _healthy(stack)
        )
        stack.wait("the Celery worker", STARTUP_SECONDS, lambda: _worker_ready(stack))
        yield stack
    finally:
        stack.stop()
        flush_redis(broker_db)


def _dags_parsed(stack: Stack) -> bool:
    errors = stack.get("/importErrors")
    if errors["total_entries"]:
        stack.fail(f"DAG import errors: {json.dumps(errors['import_errors'], indent=1)}")
    found = {d["dag_id"] for d in stack.get("/dags?limit=100")["dags"]}
    return {"catalog_refresh", "search_model_retraining"} <= found


def test_catalog_refresh_and_an_approved_retraining_on_celery(stack: Stack, tmp_path: Path) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str) -> None:
        timings[name] = round(time.monotonic() - started, 1)

    try:
        lap("services up")
        data = generate(tmp_path / "data", products=PRODUCTS, seed=SEED)
        model = tiny_model(data.out_dir, tmp_path)
        lap("data and tiny model")
        stack.wait("the DAGs to be parsed", STARTUP_SECONDS, lambda: _dags_parsed(stack))
        for dag_id in ("catalog_refresh", "search_model_retraining"):
            response = stack.api(
                "PATCH", f"/dags/{dag_id}", "data-engineer", json={"is_paused": False}
            )
            assert response.status_code == 200, response.text

        refresh = stack.trigger("catalog_refresh", {"source": str(data.out_dir)}, "data-engineer")
        stack.wait_for_run("catalog_refresh", refresh, REFRESH_SECONDS)
        lap("catalog_refresh")
        _check_tasks(stack, "catalog_refresh", refresh)
        _check_refresh(stack, refresh)

        retrain = stack.trigger(
            "search_model_retraining",
            {"train": {"base_model": model, "epochs": 1}},
            "data-engineer",
        )
        approval = f"{stack.run_path('search_model_retraining', retrain)}/taskInstances/approval"

        def awaiting_input() -> bool:
            states = stack.task_states("search_model_retraining", retrain)
            if "failed" in states.values() or "upstream_failed" in states.values():
                stack.fail(f"retraining failed before the approval: {states}")
            return states.get("approval") == "awaiting_input"

        stack.wait("the approval task to await input", RETRAIN_SECONDS, awaiting_input)
        lap("retraining up to the approval")
        detail = stack.get(f"{approval}/-1/hitlDetails")
        assert [u["id"] for u in detail["assigned_users"]] == ["governance-owner"]
        assert detail["options"] == ["Approve", "Reject"]
        answer = {"chosen_options": ["Approve"], "params_input": {}}
        refused = stack.api("PATCH", f"{approval}/-1/hitlDetails", "data-engineer", json=answer)
        assert refused.status_code == 403, refused.text
        approved = stack.api("PATCH", f"{approval}/-1/hitlDetails", "governance-owner", json=answer)
        assert approved.status_code == 200, approved.text
        assert approved.json()["responded_by"]["name"] == "governance-owner"
        stack.wait_for_run("search_model_retraining", retrain, FINISH_SECONDS)
        lap("retraining promoted")
        _check_tasks(stack, "search_model_retraining", retrain)
        _check_promotion(stack, retrain)
        assert "execute_workload" in (stack.logs / "celery-worker.log").read_text(
            errors="replace"
        ), "the tasks did not run on the Celery worker"
    except BaseException:
        if not stack.reported:
            print(stack.diagnostics())
        raise
    finally:
        print(f"timings (s since services were up): {timings}")


def _check_tasks(stack: Stack, dag_id: str, run_id: str) -> None:
    """Every task succeeded (or was skipped by design) on its first try: no hidden retry."""
    found = stack.get(f"{stack.run_path(dag_id, run_id)}/taskInstances?limit=200")
    tasks = found["task_instances"]
    bad = {
        ti["task_id"]: (ti["state"], ti["try_number"])
        for ti in tasks
        if ti["state"] not in ("success", "skipped") or ti["try_number"] > 1
    }
    assert not bad, f"{dag_id}: tasks not done on their first try: {bad}"
    assert {ti["queue"] for ti in tasks if ti["state"] == "success"} == {"default"}


def _check_refresh(stack: Stack, run_id: str) -> None:
    ledger = open_ledger(stack.urls["ledger"])
    try:
        run = ledger.get_run(ledger_run_id("catalog_refresh", run_id))
        assert run is not None and run.outcome == "OK", run
        assert run.triggered_by == "data-engineer"
        gates = {g.gate: g.status for g in ledger.gate_results(run.run_id)}
        assert gates["ingest"] == gates["raw_data"] == "pass", gates
        assert gates["training_data"] in ("pass", "warn"), gates
        files = ledger.ingested_files(batch_id=run.lineage["batch_id"])
        accepted = {f.table_name: f.rows_accepted for f in files}
    finally:
        ledger.dispose()
    engine = sa.create_engine(stack.urls["warehouse"])
    try:
        with engine.connect() as conn:
            for table, rows in accepted.items():
                count = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
                assert count == rows, table
            for mart in ("dim_products", "fct_training_pairs", "fct_golden_judgements"):
                count = conn.execute(sa.text(f"SELECT count(*) FROM marts.{mart}")).scalar_one()
                assert count > 0, f"marts.{mart} is empty"
    finally:
        engine.dispose()
    # The marts were published as Assets and queued a retraining (schedules are off here).
    marts = {
        asset["id"]
        for asset in stack.get("/assets?limit=100")["assets"]
        if asset["name"].startswith("shelfguard.marts.")
    }
    queued = stack.get("/dags/search_model_retraining/assets/queuedEvents")
    assert {event["asset_id"] for event in queued["queued_events"]} == marts, queued
    assert len(marts) == 3


def _check_promotion(stack: Stack, run_id: str) -> None:
    ledger = open_ledger(stack.urls["ledger"])
    try:
        key = ledger_run_id("search_model_retraining", run_id)
        run = ledger.get_run(key)
        assert run is not None and run.outcome == "PROMOTED", run
        assert run.triggered_by == "data-engineer"
        (decision,) = ledger.approvals(key)
        assert (decision.decision, decision.via, decision.decided_by) == (
            "approved",
            "hitl",
            "governance-owner",
        )
        champion = ledger.get_alias("champion")
        assert champion is not None and champion.run_id == key
        assert champion.model.sha256 == run.lineage["model_sha256"] == decision.model_sha256
        assert champion.index.sha256 == run.lineage["index_sha256"] == decision.index_sha256
        gates = {g.gate: g.status for g in ledger.gate_results(key)}
        assert {gates[g] for g in ("training_data", "evaluation", "index")} <= {"pass", "warn"}
    finally:
        ledger.dispose()
