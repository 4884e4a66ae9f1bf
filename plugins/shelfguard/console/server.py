"""Serving the console: Airflow's api-server on the embedded home, with two demo users.

The embedded home uses Airflow's default auth manager, ``SimpleAuthManager``: its users
are listed in ``[core] simple_auth_manager_users`` (``name:ROLE``) and their passwords
kept in a JSON file under the Airflow home. ``shelfguard ui`` names two users there —
``governance-owner`` (the approver the demo policy lists) and ``data-engineer`` (who
operates the DAGs but decides nothing) — and makes each a password once.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from shelfguard.airflow.evidence_links import URL_PREFIX
from shelfguard.config import Settings

#: The demo users and their Airflow roles (SimpleAuthManager: VIEWER < USER < OP < ADMIN).
DEMO_USERS: Mapping[str, str] = {"governance-owner": "USER", "data-engineer": "OP"}
SIMPLE_AUTH_MANAGER = (
    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
)


class ConsoleError(RuntimeError):
    """The api-server did not start or did not answer in time."""


def passwords_file(settings: Settings) -> Path:
    """Where SimpleAuthManager keeps the demo users' passwords (JSON, mode 0600)."""
    return settings.airflow_home / "simple_auth_manager_passwords.json.generated"


def ensure_demo_passwords(settings: Settings) -> dict[str, str]:
    """Each demo user's password, making one for a user who has none (kept for later runs)."""
    path = passwords_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    known: dict[str, str] = json.loads(path.read_text() or "{}") if path.exists() else {}
    missing = [name for name in DEMO_USERS if name not in known]
    if missing or not path.exists():
        for name in missing:
            known[name] = secrets.token_urlsafe(12)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(json.dumps(known) + "\n")
    os.chmod(path, 0o600)
    return {name: known[name] for name in DEMO_USERS}


def console_env(settings: Settings, host: str, port: int) -> dict[str, str]:
    """The embedded Airflow environment plus the api-server's address and its users."""
    from shelfguard.airflow.embedded import airflow_env

    env = airflow_env(settings)
    env.update(
        {
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
                f"{name}:{role}" for name, role in DEMO_USERS.items()
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file(settings)),
            "AIRFLOW__API__HOST": host,
            "AIRFLOW__API__PORT": str(port),
            # The plugin (and so the console) loads when the api-server starts.
            "AIRFLOW__CORE__LAZY_LOAD_PLUGINS": "False",
        }
    )
    return env


def console_url(host: str, port: int) -> str:
    """The console's address on an api-server at ``host:port``."""
    return f"http://{host}:{port}{URL_PREFIX}/"


def start_api_server(
    settings: Settings, host: str, port: int, *, log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``airflow api-server`` on the embedded home (its database migrated first)."""
    from shelfguard.airflow.embedded import ensure_airflow_db

    ensure_airflow_db(settings)
    ensure_demo_passwords(settings)
    command = [sys.executable, "-m", "airflow", "api-server", "--host", host, "--port", str(port)]
    env = console_env(settings, host, port)
    # Its own process group: stop_api_server ends the server and every worker it started.
    if log_path is None:
        return subprocess.Popen(command, env=env, start_new_session=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop_api_server(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Stop the api-server and its workers (its whole process group); SIGKILL after
    ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_until_ready(
    proc: subprocess.Popen[bytes], host: str, port: int, *, timeout: float = 120.0
) -> None:
    """Poll the api-server's health endpoint until it answers (ConsoleError on exit/timeout)."""
    url = f"http://{host}:{port}/api/v2/monitor/health"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConsoleError(f"airflow api-server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise ConsoleError(f"airflow api-server did not answer {url} within {timeout:.0f} s")
