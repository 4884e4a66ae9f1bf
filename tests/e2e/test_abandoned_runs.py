"""A run killed with SIGKILL is ABANDONED, never RUNNING forever; one run per DAG per home.

Real Airflow (``shelfguard run`` → ``airflow dags test``) on the embedded home, killed
the way an out-of-memory killer or a lost machine would: SIGKILL, no clean-up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from shelfguard.config import load_settings
from shelfguard.data.generator import generate
from shelfguard.ledger import open_ledger

pytestmark = pytest.mark.airflow
CLI = str(Path(sys.executable).with_name("shelfguard"))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env["SHELFGUARD_HOME"] = str(home)
    return env


def _start(home: Path, source: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, "run", "catalog_refresh", "--source", str(source), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home),
        start_new_session=True,  # its own process group, to kill it whole
    )


def _refresh(home: Path, source: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "run", "catalog_refresh", "--source", str(source), "--json"],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=900,
    )


def _running_with_a_gate(home: Path, proc: subprocess.Popen[str]) -> str:
    """The run's ledger id once it is RUNNING and has recorded its first gate verdict."""
    settings = load_settings({"SHELFGUARD_HOME": str(home)})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if (home / "ledger.sqlite").exists():
            ledger = open_ledger(settings.ledger_url)
            try:
                for run in ledger.running_runs():
                    if ledger.gate_results(run.run_id):
                        return run.run_id
            finally:
                ledger.dispose()
        time.sleep(0.5)
    raise AssertionError("the run never recorded a gate")


def _status(home: Path) -> dict[str, Any]:
    result = subprocess.run(
        [CLI, "status", "--json"], capture_output=True, text=True, env=_env(home), timeout=300
    )
    return {r["run_id"]: r for r in json.loads(result.stdout)["runs"]}


def test_a_killed_run_is_abandoned_and_a_second_run_waits_its_turn(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", products=300, seed=9).out_dir
    home = tmp_path / "home"

    # 1. The whole run (CLI and Airflow) is killed in the middle.
    proc = _start(home, data)
    try:
        run_id = _running_with_a_gate(home, proc)
        second = _refresh(home, data)
        said = " ".join(second.stderr.split())
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"catalog_refresh is already running on this home: run {run_id}" in said
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run = _status(home)[run_id]
    assert run["outcome"] == "ABANDONED", run
    assert "died before it finished" in run["message"]
    assert "last task started:" in run["message"]

    # 2. Only the Airflow process dies: the command that started it reports ABANDONED.
    proc = _start(home, data)
    try:
        run_id = _running_with_a_gate(home, proc)
        (airflow,) = [
            p
            for p in psutil.Process(proc.pid).children()
            if p.cmdline()[1:5] == ["-m", "airflow", "dags", "test"]
        ]
        airflow.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    outcome = json.loads(stdout)
    assert (proc.returncode, outcome["outcome"], outcome["run_id"]) == (1, "ABANDONED", run_id)
    assert "the Airflow process exited (code -9)" in outcome["message"], stderr[-2000:]

    # 3. The home is usable again: the next run completes. Without a terminal (a log,
    # cron) it prints one plain line per task as the task ends, never Airflow's lines.
    result = subprocess.run(
        [CLI, "run", "catalog_refresh", "--source", str(data)],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "catalog_refresh: running on the embedded Airflow"
    ended = {
        line.split()[0]: line.split()[1]
        for line in lines[1:]
        if line.startswith("  ") and "(at " in line
    }
    for task in ("start", "ingest", "raw_data_gate", "publish", "finalize"):
        assert ended.get(task) == "success", (task, lines)
    assert list(ended).index("start") < list(ended).index("ingest") < list(ended).index("finalize")
    assert not any("[info" in line or "Task instance" in line for line in lines)
    newest = max(_status(home).values(), key=lambda r: str(r.get("started_at")))
    assert newest["outcome"] == "OK", newest
