"""PostgreSQL crash-restarts in the middle of a whole retraining run.

The ledger lives on a private PostgreSQL (``pg_server.PgServer``, never the machine's
shared service); the warehouse is the home's DuckDB file and Airflow the embedded one, so
that only the ledger's server goes away. A real ``shelfguard run
search_model_retraining`` (tiny base model, open thresholds, approval by policy) runs,
and the server is crash-restarted (``pg_ctl restart -m immediate``) as soon as the run
has recorded its training-data verdict (the training data is being prepared, then the
model trained) and again as soon as it has recorded its evaluation verdict (the index
is built next, then approval and promotion). A task that meets the server while it
restarts fails, and Airflow runs it again (the DAG's one retry, after 5 s here).

What must hold: the run ends PROMOTED, or FAILED (never RUNNING, never half-promoted);
the ledger's hash chain verifies; the champion is the run's own pair if and only if the
alias history says so, with one history row per promotion; a rerun after a FAILED run
is PROMOTED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pg_server import PgServer
from tiny_model_support import tiny_model

from shelfguard.config import project_root
from shelfguard.data.generator import generate
from shelfguard.ledger import open_ledger

pytestmark = [pytest.mark.integration, pytest.mark.airflow, pytest.mark.timeout(1800)]
CLI = str(Path(sys.executable).with_name("shelfguard"))


def _open_policy(path: Path) -> Path:
    """The project's policy with the model thresholds opened: a tiny model can pass."""
    policy = yaml.safe_load((project_root() / "governance.yml").read_text())
    policy["evaluation"].update(
        floors={}, max_drop_vs_champion=1.0, max_slice_drop=1.0, first_run_must_beat=[]
    )
    policy["index"]["min_canary_hit_rate"] = 0.0
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


def _gates_recorded(url: str) -> dict[str, list[str]]:
    """Each RUNNING run's recorded gates; {} while the server is away."""
    try:
        ledger = open_ledger(url)
    except Exception:  # the server may be restarting
        return {}
    try:
        return {
            r.run_id: [g.gate for g in ledger.gate_results(r.run_id)] for r in ledger.running_runs()
        }
    except Exception:
        return {}
    finally:
        ledger.dispose()


def test_a_retraining_run_through_two_crash_restarts_of_the_ledger_s_server(
    server: PgServer, tmp_path: Path
) -> None:
    ledger_url = server.create_database("ledger")
    data = generate(tmp_path / "data", products=300, seed=11).out_dir
    home = tmp_path / "home"
    policy = _open_policy(tmp_path / "governance.yml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env.update(
        SHELFGUARD_HOME=str(home),
        SHELFGUARD_LEDGER_URL=ledger_url,
        SHELFGUARD_POLICY=str(policy),
        SHELFGUARD_TASK_RETRY_SECONDS="5",  # the DAG's own delay is 2 minutes
    )

    def cli(*args: str) -> tuple[int, dict[str, Any]]:
        result = subprocess.run(
            [CLI, *args, "--json"], capture_output=True, text=True, env=env, timeout=1200
        )
        assert result.stdout.strip(), result.stderr[-3000:]
        return result.returncode, json.loads(result.stdout)

    code, refreshed = cli("run", "catalog_refresh", "--source", str(data))
    assert (code, refreshed["outcome"]) == (0, "OK"), refreshed
    conf = json.dumps({"train": {"base_model": tiny_model(data, tmp_path)}})

    proc = subprocess.Popen(
        [CLI, "run", "search_model_retraining", "--conf", conf, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    restarted_after: list[str] = []
    try:
        for gate in ("training_data", "evaluation"):
            deadline = time.monotonic() + 900
            while proc.poll() is None and time.monotonic() < deadline:
                if any(gate in gates for gates in _gates_recorded(ledger_url).values()):
                    server.restart("immediate")  # a crash, then recovery from the WAL
                    restarted_after.append(gate)
                    break
                time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=1200)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
    outcome = json.loads(stdout)
    assert restarted_after == ["training_data", "evaluation"], (restarted_after, stderr[-3000:])
    assert outcome["outcome"] in {"PROMOTED", "FAILED"}, (outcome, stderr[-3000:])

    code, verified = cli("verify")
    assert code == 0, verified
    ledger = open_ledger(ledger_url)
    try:
        history = ledger.alias_history()
        champion = ledger.get_alias()
        assert ledger.running_runs() == []
        by_run = [move.run_id for move in history]
        if outcome["outcome"] == "PROMOTED":
            assert by_run == [outcome["run_id"]]
            assert champion is not None and champion.run_id == outcome["run_id"]
        else:
            # FAILED: nothing of a promotion was written; the rerun promotes.
            assert (by_run, champion) == ([], None)
            code, rerun = cli("run", "search_model_retraining", "--conf", conf)
            assert (code, rerun["outcome"]) == (0, "PROMOTED"), rerun
            assert [m.run_id for m in ledger.alias_history()] == [rerun["run_id"]]
        print(f"restarted after {restarted_after}; the run ended {outcome['outcome']}")
    finally:
        ledger.dispose()
