"""A step that finds the embedded DuckDB file held by another process waits for it."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import sqlalchemy as sa

from shelfguard.data import duckdb_wait
from shelfguard.quality import open_warehouse

pytestmark = pytest.mark.spread

# Holds the file open for writing for argv[2] seconds ("inf": until stdin closes).
HOLDER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("create table if not exists t as select 42 as answer")
con.execute("checkpoint")
print("holding", flush=True)
time.sleep(float(sys.argv[2])) if sys.argv[2] != "inf" else sys.stdin.read()
con.close()
"""


def _hold(path: Path, seconds: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), seconds],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def test_a_connection_waits_until_the_other_process_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(duckdb_wait.WAIT_ENV, "60")
    path = tmp_path / "warehouse.duckdb"
    holder = _hold(path, "1.5")
    with pytest.raises(duckdb.IOException, match="lock"):
        duckdb.connect(str(path), read_only=True)  # plain DuckDB refuses at once
    with caplog.at_level(logging.INFO, logger="shelfguard.data.duckdb_wait"):
        con = duckdb_wait.connect(path, read_only=True)
    try:
        assert "another process holds it" in caplog.text
        assert con.execute("select answer from t").fetchone() == (42,)
    finally:
        con.close()
    assert holder.wait(timeout=30) == 0


def test_the_read_only_engine_of_the_gates_waits_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(duckdb_wait.WAIT_ENV, "60")
    path = tmp_path / "warehouse.duckdb"
    holder = _hold(path, "1.5")
    with (
        caplog.at_level(logging.INFO, logger="shelfguard.data.duckdb_wait"),
        open_warehouse(f"duckdb:///{path}") as engine,
        engine.connect() as connection,
    ):
        assert connection.execute(sa.text("select answer from t")).scalar() == 42
    assert "another process holds it" in caplog.text
    assert holder.wait(timeout=30) == 0


def test_past_the_wait_the_error_names_the_process_holding_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(duckdb_wait.WAIT_ENV, "0.3")
    path = tmp_path / "warehouse.duckdb"
    holder = _hold(path, "inf")
    try:
        with pytest.raises(duckdb_wait.WarehouseBusy) as busy:
            duckdb_wait.connect(path)
        message = str(busy.value)
        assert str(holder.pid) in message
        assert "another run" in message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
