"""One embedded run per DAG per home, and runs whose process died marked ABANDONED."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from shelfguard.cli import main
from shelfguard.config import Settings
from shelfguard.ledger import open_ledger
from shelfguard.liveness import (
    EMBEDDED_RUNNER,
    AlreadyRunning,
    RunLock,
    holder,
    reap_abandoned,
)


def _start(settings: Settings, run_id: str, request_id: str, runner: str | None) -> None:
    ledger = open_ledger(settings.ledger_url)
    lineage = {"request_id": request_id} | ({"runner": runner} if runner else {})
    ledger.start_run(run_id, run_id.split("/")[0], triggered_by="carol", lineage=lineage)
    ledger.dispose()


def test_a_second_run_of_the_same_dag_is_refused_naming_the_first(sg_home: Settings) -> None:
    _start(sg_home, "catalog_refresh/manual__1", "req-1", EMBEDDED_RUNNER)
    with RunLock(sg_home, "catalog_refresh", "req-1"):
        with pytest.raises(AlreadyRunning) as busy:
            RunLock(sg_home, "catalog_refresh", "req-2").acquire()
        said = str(busy.value)
        assert "catalog_refresh is already running on this home" in said
        assert "run catalog_refresh/manual__1" in said and f"process {os.getpid()}" in said
        # Another DAG has its own lock.
        with RunLock(sg_home, "search_model_retraining", "req-3"):
            info = holder(sg_home, "search_model_retraining")
            assert info is not None and info["request_id"] == "req-3"
    assert holder(sg_home, "catalog_refresh") is None
    with RunLock(sg_home, "catalog_refresh", "req-2"):
        pass


def test_the_lock_lives_as_long_as_the_child_that_shares_it(sg_home: Settings) -> None:
    lock = RunLock(sg_home, "catalog_refresh", "req-1").acquire()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lock.fileno(),)
    )
    try:
        lock.release()  # the parent lets go: the child still holds it
        info = holder(sg_home, "catalog_refresh")
        assert info is not None and info["request_id"] == "req-1"
        with pytest.raises(AlreadyRunning):
            RunLock(sg_home, "catalog_refresh", "req-2").acquire()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    deadline = time.monotonic() + 10
    while holder(sg_home, "catalog_refresh") is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert holder(sg_home, "catalog_refresh") is None


def test_a_dead_embedded_run_is_abandoned_and_status_says_so(
    sg_home: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    _start(sg_home, "catalog_refresh/manual__dead", "req-dead", EMBEDDED_RUNNER)
    _start(sg_home, "search_model_retraining/manual__alive", "req-alive", EMBEDDED_RUNNER)
    _start(sg_home, "search_model_retraining/scheduled__1", "req-prod", None)
    ledger = open_ledger(sg_home.ledger_url)
    with RunLock(sg_home, "search_model_retraining", "req-alive"):
        (reaped,) = reap_abandoned(sg_home, ledger)
        assert reaped.run_id == "catalog_refresh/manual__dead"
        assert reaped.outcome == "ABANDONED"
        assert "died before it finished" in (reaped.message or "")
        assert reap_abandoned(sg_home, ledger) == []
        outcomes = {r.run_id: r.outcome for r in ledger.recent_runs()}
        # The live run and a run of a production Airflow (no lock) are left alone.
        assert outcomes["search_model_retraining/manual__alive"] == "RUNNING"
        assert outcomes["search_model_retraining/scheduled__1"] == "RUNNING"
    # Its process gone too, the next command that opens the home marks it.
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    runs = {r["run_id"]: r for r in json.loads(capsys.readouterr().out)["runs"]}
    assert runs["search_model_retraining/manual__alive"]["outcome"] == "ABANDONED"
    assert runs["search_model_retraining/scheduled__1"]["outcome"] == "RUNNING"
    ledger.dispose()
