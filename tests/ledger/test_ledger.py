"""The governance ledger, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from shelfguard.ledger import (
    ArtifactRecord,
    IngestFileRecord,
    Ledger,
    LedgerError,
    alembic_config,
)
from shelfguard.ledger.models import Alias, AliasHistory, Base

BACKENDS = ("sqlite", "postgresql")


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP SCHEMA public CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a fresh SQLite file, or the test PostgreSQL with its schema wiped."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """A migrated ledger."""
    store = Ledger(ledger_url)
    store.migrate()
    yield store
    store.dispose()


def _pair(ledger: Ledger, tag: str) -> tuple[ArtifactRecord, ArtifactRecord]:
    model = ledger.record_artifact("model", f"file:///models/{tag}", f"model-{tag}")
    index = ledger.record_artifact("index", f"file:///indexes/{tag}", f"index-{tag}")
    return model, index


def _count(ledger: Ledger, table: str) -> int:
    with ledger.engine.connect() as connection:
        return int(connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())


def _in_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` in ``count`` threads released together; results or raised exceptions."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def runner(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# migrations


def _allowed_values(checks: dict[str, str]) -> dict[str, set[str]]:
    """CHECK constraint name -> the quoted values it allows (dialects render the SQL differently)."""
    return {name: set(re.findall(r"'([^']*)'", sqltext)) for name, sqltext in checks.items()}


def test_migrate_twice_is_a_no_op_and_matches_the_models(ledger: Ledger) -> None:
    ledger.record_artifact("dataset", "file:///d", "d1")
    ledger.migrate()
    ledger.migrate()

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with ledger.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        assert context.get_current_revision() == head == "0007"
        assert compare_metadata(context, Base.metadata) == []
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names())
        # Alembic does not compare CHECK constraints, so the enum checks are compared here.
        migrated = {
            str(check["name"]): str(check["sqltext"])
            for table in Base.metadata.tables
            for check in inspector.get_check_constraints(table)
        }
    declared = {
        str(constraint.name): str(constraint.sqltext)
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
        if isinstance(constraint, sa.CheckConstraint)
    }
    assert tables == set(Base.metadata.tables) | {"alembic_version"}
    assert len(declared) == 9
    assert _allowed_values(migrated) == _allowed_values(declared)
    assert _count(ledger, "artifacts") == 1


def test_the_migration_downgrades_cleanly_outside_ledger(ledger: Ledger, ledger_url: str) -> None:
    # Through env.py's standalone path, as `alembic downgrade` would run it.
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", ledger_url.replace("%", "%%"))
    command.downgrade(config, "base")
    with ledger.engine.connect() as connection:
        assert set(sa.inspect(connection).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    ledger.migrate()
    assert ledger.start_run("r1", "dag").outcome == "RUNNING"


def test_migrate_from_several_processes_at_once(ledger_url: str) -> None:
    # Separate processes, like Airflow tasks starting together on an empty database.
    script = "import sys; from shelfguard.ledger import Ledger; Ledger(sys.argv[1]).migrate()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, ledger_url], env=env, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * len(processes), errors
    store = Ledger(ledger_url)
    try:
        store.migrate()
        assert store.recent_runs() == []
    finally:
        store.dispose()


def test_foreign_keys_and_enum_checks_are_enforced_by_the_database(ledger: Ledger) -> None:
    ledger.start_run("r1", "dag")
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO aliases (name, version, model_artifact_id, index_artifact_id,"
                " updated_at, updated_by) VALUES ('x', 1, 999, 998, '2025-01-01', 'me')"
            )
        )
    with pytest.raises(sa.exc.IntegrityError), ledger.engine.begin() as connection:
        connection.execute(sa.text("UPDATE runs SET outcome = 'MAYBE' WHERE run_id = 'r1'"))
    run = ledger.get_run("r1")
    assert run is not None
    assert run.outcome == "RUNNING"


# runs


def test_run_lifecycle_is_idempotent(ledger: Ledger) -> None:
    started = ledger.start_run("r1", "catalog_refresh", triggered_by="scheduler")
    assert started.outcome == "RUNNING"
    assert started.finished_at is None
    assert started.started_at.tzinfo is not None
    assert started.started_at.utcoffset() == timedelta(0)

    again = ledger.start_run("r1", "catalog_refresh", triggered_by="someone-else")
    assert again.started_at == started.started_at
    assert again.triggered_by == "scheduler"

    finished = ledger.finish_run("r1", "BLOCKED", blocked_gate="raw_data", message="3 checks")
    assert (finished.outcome, finished.blocked_gate, finished.message) == (
        "BLOCKED",
        "raw_data",
        "3 checks",
    )
    assert finished.finished_at is not None
    assert finished.finished_at >= finished.started_at
    assert ledger.finish_run("r1", "BLOCKED", blocked_gate="raw_data", message="3 checks") == (
        finished
    )

    # A retried start task must not make a finished run look like it is running.
    restarted = ledger.start_run("r1", "catalog_refresh")
    assert restarted.outcome == "BLOCKED"
    assert restarted.finished_at == finished.finished_at
    assert ledger.get_run("r1") == restarted
    assert ledger.get_run("nope") is None
    assert _count(ledger, "runs") == 1


def test_a_run_id_cannot_be_reused_by_another_dag(ledger: Ledger) -> None:
    ledger.start_run("scheduled__2025-01-01", "catalog_refresh")
    with pytest.raises(LedgerError, match="belongs to DAG 'catalog_refresh'"):
        ledger.start_run("scheduled__2025-01-01", "retrain")


def test_lineage_merges(ledger: Ledger) -> None:
    ledger.start_run("r1", "retrain", lineage={"code_version": "abc", "policy_sha256": "p1"})
    ledger.update_lineage("r1", input_files={"catalog.csv": "h1"}, dbt_manifest_sha256="m1")
    ledger.update_lineage("r1", policy_sha256="p2")
    ledger.start_run("r1", "retrain", lineage={"base_model": "tiny-bert"})

    run = ledger.get_run("r1")
    assert run is not None
    assert run.lineage == {
        "code_version": "abc",
        "policy_sha256": "p2",
        "input_files": {"catalog.csv": "h1"},
        "dbt_manifest_sha256": "m1",
        "base_model": "tiny-bert",
    }


def test_unknown_runs_are_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="unknown run 'ghost'"):
        ledger.finish_run("ghost", "OK")
    with pytest.raises(LedgerError, match="unknown run 'ghost'"):
        ledger.update_lineage("ghost", x=1)
    with pytest.raises(LedgerError, match="unknown run 'ghost'"):
        ledger.record_gate("ghost", "raw_data", "pass")
    with pytest.raises(LedgerError, match="unknown run 'ghost'"):
        ledger.record_artifact("model", "file:///m", "m", produced_by_run="ghost")
    assert _count(ledger, "runs") == 0


def test_recent_runs_newest_first(ledger: Ledger) -> None:
    for run_id, dag_id in [("a", "ingest"), ("b", "retrain"), ("c", "ingest"), ("d", "ingest")]:
        ledger.start_run(run_id, dag_id)

    assert [run.run_id for run in ledger.recent_runs()] == ["d", "c", "b", "a"]
    assert [run.run_id for run in ledger.recent_runs(limit=2)] == ["d", "c"]
    assert [run.run_id for run in ledger.recent_runs(dag_id="ingest")] == ["d", "c", "a"]
    with pytest.raises(LedgerError, match="limit"):
        ledger.recent_runs(limit=0)


# artifacts


def test_recording_an_artifact_twice_returns_the_first_row(ledger: Ledger) -> None:
    ledger.start_run("r1", "retrain")
    first = ledger.record_artifact(
        "model", "file:///m/1", "abc", produced_by_run="r1", meta={"base": "tiny-bert"}
    )
    second = ledger.record_artifact("model", "file:///m/elsewhere", "abc")
    assert second == first
    assert first.meta == {"base": "tiny-bert"}
    assert first.created_at.tzinfo is not None
    # Same content, another kind, is another artifact.
    other = ledger.record_artifact("index", "file:///i/1", "abc")
    assert other.id != first.id

    assert ledger.get_artifact(first.id) == first
    assert ledger.find_artifact("model", "abc") == first
    assert ledger.find_artifact("model", "zzz") is None
    assert ledger.get_artifact(12345) is None
    assert _count(ledger, "artifacts") == 2


# gates


def test_recording_a_gate_again_replaces_it(ledger: Ledger) -> None:
    ledger.start_run("r1", "retrain")
    failed_check = {
        "name": "ndcg_at_10",
        "status": "fail",
        "observed": 0.41,
        "expected": ">= 0.5",
        "severity": "error",
        "message": "below threshold",
    }
    first = ledger.record_gate(
        "r1", "model_eval", "fail", subject="model:abc", checks=[failed_check]
    )
    ledger.record_gate("r1", "raw_data", "pass", subject="data:snap1")
    latest = ledger.record_gate(
        "r1",
        "model_eval",
        "pass",
        subject="model:abc",
        checks=[{**failed_check, "status": "pass", "observed": 0.6}],
        metrics={"ndcg_at_10": 0.6},
        report_uri="file:///reports/r1/model_eval.html",
    )
    ledger.record_gate("r1", "model_eval", "warn", subject="model:def")

    assert latest.id == first.id
    assert latest.created_at >= first.created_at
    results = ledger.gate_results("r1")
    assert [(g.gate, g.subject, g.status) for g in results] == [
        ("model_eval", "model:abc", "pass"),
        ("raw_data", "data:snap1", "pass"),
        ("model_eval", "model:def", "warn"),
    ]
    assert results[0] == latest
    assert results[0].checks[0]["observed"] == 0.6
    assert results[0].metrics == {"ndcg_at_10": 0.6}
    assert results[1].subject == "data:snap1"
    assert ledger.gate_results("other") == []


def test_concurrent_writers_of_the_same_keys_leave_one_row(ledger_url: str, ledger: Ledger) -> None:
    ledger.start_run("r1", "retrain")
    writers = [Ledger(ledger_url) for _ in range(6)]
    record = IngestFileRecord(
        batch_id="b1",
        file_name="catalog.csv",
        table_name="raw_products",
        sha256="f1",
        bytes=10,
        rows_read=3,
        rows_accepted=3,
        rows_quarantined=0,
    )

    def write(i: int) -> None:
        store = writers[i]
        store.start_run("r2", "ingest")
        store.record_artifact("model", f"file:///m/{i}", "same")
        store.record_gate("r1", "raw_data", "pass" if i % 2 else "fail", subject="data:s")
        store.record_ingested_file(record)
        store.record_approval(
            "r1", "approved", "alice", model_sha256="m", index_sha256="i", via="hitl"
        )

    try:
        assert _in_threads(len(writers), write) == [None] * len(writers)
    finally:
        for store in writers:
            store.dispose()
    for table in ("artifacts", "gate_results", "ingest_files", "approvals"):
        assert _count(ledger, table) == 1, table
    assert _count(ledger, "runs") == 2


# ingestion


def test_ingested_files_are_recorded_once_per_table_and_content(ledger: Ledger) -> None:
    ledger.start_run("r1", "catalog_refresh")
    record = IngestFileRecord(
        run_id="r1",
        batch_id="batch-1",
        file_name="products.csv",
        table_name="raw_products",
        sha256="h1",
        bytes=2048,
        rows_read=10,
        rows_accepted=8,
        rows_quarantined=2,
        quarantine_by_reason={"missing_title": 1, "bad_price": 1},
        extra_columns=["colour"],
    )
    assert ledger.find_ingested_file("raw_products", "h1") is None

    saved = ledger.record_ingested_file(record)
    assert saved.id is not None
    assert saved.ingested_at is not None
    assert saved == replace(record, id=saved.id, ingested_at=saved.ingested_at)
    again = ledger.record_ingested_file(replace(record, batch_id="batch-2", run_id=None))
    assert again == saved
    assert ledger.find_ingested_file("raw_products", "h1") == saved
    # The same bytes loaded into another table are another load.
    ledger.record_ingested_file(replace(record, table_name="raw_products_v2", run_id=None))

    assert [f.table_name for f in ledger.ingested_files()] == ["raw_products", "raw_products_v2"]
    assert ledger.ingested_files(run_id="r1") == [saved]
    assert len(ledger.ingested_files(batch_id="batch-1")) == 2
    assert ledger.ingested_files(run_id="r1", batch_id="batch-9") == []


def test_ingested_file_counts_must_account_for_every_row(ledger: Ledger) -> None:
    lossy = IngestFileRecord(
        batch_id="b",
        file_name="products.csv",
        table_name="raw_products",
        sha256="h",
        bytes=1,
        rows_read=10,
        rows_accepted=8,
        rows_quarantined=1,
    )
    with pytest.raises(LedgerError, match="rows_read=10"):
        ledger.record_ingested_file(lossy)
    negative = replace(lossy, rows_read=9, bytes=-1)
    with pytest.raises(LedgerError, match="negative"):
        ledger.record_ingested_file(negative)
    assert ledger.ingested_files() == []


# approvals


def test_approvals_are_logged_and_retries_do_not_duplicate(ledger: Ledger) -> None:
    ledger.start_run("r1", "retrain")
    pair = {"model_sha256": "m1", "index_sha256": "i1"}
    first = ledger.record_approval(
        "r1", "approved", "alice", via="hitl", comment="looks good", policy_sha256="p1", **pair
    )
    assert ledger.record_approval("r1", "approved", "alice", via="hitl", **pair) == first
    changed_mind = ledger.record_approval("r1", "rejected", "alice", via="cli", **pair)
    timed_out = ledger.record_approval(
        "r1", "rejected", "shelfguard", via="timeout", model_sha256="m2", index_sha256="i2"
    )

    approvals = ledger.approvals("r1")
    assert approvals == [first, changed_mind, timed_out]
    assert (first.decision, first.decided_by, first.comment, first.policy_sha256) == (
        "approved",
        "alice",
        "looks good",
        "p1",
    )
    assert first.decided_at.tzinfo is not None
    assert ledger.approvals("other") == []
    with pytest.raises(LedgerError, match="unknown run"):
        ledger.record_approval("ghost", "approved", "alice", via="hitl", **pair)


# aliases


def test_move_alias_bumps_the_version_and_writes_history(ledger: Ledger) -> None:
    ledger.start_run("r1", "retrain")
    model1, index1 = _pair(ledger, "1")
    model2, index2 = _pair(ledger, "2")
    assert ledger.get_alias() is None
    assert ledger.alias_history() == []

    first = ledger.move_alias(
        "champion", model1.id, index1.id, moved_by="scheduler", reason="first", run_id="r1"
    )
    assert (first.version, first.model, first.index, first.run_id) == (1, model1, index1, "r1")
    second = ledger.move_alias(
        "champion", model2.id, index2.id, moved_by="alice", reason="better", expected_version=1
    )
    back = ledger.move_alias(
        "champion",
        model1.id,
        index1.id,
        moved_by="bob",
        reason="regression",
        action="rollback",
        expected_version=2,
    )

    assert (second.version, back.version) == (2, 3)
    assert ledger.get_alias("champion") == back
    assert ledger.get_alias("staging") is None
    history = ledger.alias_history("champion")
    assert [(h.version, h.action, h.model_artifact_id, h.index_artifact_id) for h in history] == [
        (1, "promote", model1.id, index1.id),
        (2, "promote", model2.id, index2.id),
        (3, "rollback", model1.id, index1.id),
    ]
    assert [(h.previous_model_artifact_id, h.previous_index_artifact_id) for h in history] == [
        (None, None),
        (model1.id, index1.id),
        (model2.id, index2.id),
    ]
    assert (history[0].run_id, history[2].moved_by, history[2].reason) == (
        "r1",
        "bob",
        "regression",
    )
    assert history[2].moved_at == back.updated_at


def test_moving_to_the_current_pair_is_a_no_op(ledger: Ledger) -> None:
    model, index = _pair(ledger, "1")
    first = ledger.move_alias("champion", model.id, index.id, moved_by="a", reason="r")
    retried = ledger.move_alias(
        "champion", model.id, index.id, moved_by="a", reason="r", expected_version=0
    )
    assert retried == first
    assert len(ledger.alias_history()) == 1


def _alias_state(ledger: Ledger) -> tuple[object, object]:
    return ledger.get_alias(), ledger.alias_history()


def test_stale_expected_version_raises_and_changes_nothing(ledger: Ledger) -> None:
    model1, index1 = _pair(ledger, "1")
    model2, index2 = _pair(ledger, "2")
    with pytest.raises(LedgerError, match="version 0, not 1"):
        ledger.move_alias(
            "champion", model1.id, index1.id, moved_by="a", reason="r", expected_version=1
        )
    assert _alias_state(ledger) == (None, [])

    ledger.move_alias(
        "champion", model1.id, index1.id, moved_by="a", reason="r", expected_version=0
    )
    before = _alias_state(ledger)
    with pytest.raises(LedgerError, match="version 1, not 0"):
        ledger.move_alias(
            "champion", model2.id, index2.id, moved_by="b", reason="r", expected_version=0
        )
    assert _alias_state(ledger) == before


def test_concurrent_moves_from_the_same_version_let_exactly_one_win(
    ledger_url: str, ledger: Ledger
) -> None:
    model, index = _pair(ledger, "base")
    ledger.move_alias("champion", model.id, index.id, moved_by="a", reason="r")
    pairs = [_pair(ledger, str(i)) for i in range(5)]
    movers = [Ledger(ledger_url) for _ in pairs]

    def move(i: int) -> object:
        new_model, new_index = pairs[i]
        return movers[i].move_alias(
            "champion", new_model.id, new_index.id, moved_by=f"m{i}", reason="r", expected_version=1
        )

    try:
        results = _in_threads(len(movers), move)
    finally:
        for store in movers:
            store.dispose()
    failures = [r for r in results if isinstance(r, Exception)]
    assert len(failures) == len(movers) - 1
    assert all(isinstance(f, LedgerError) for f in failures), failures
    assert [h.version for h in ledger.alias_history()] == [1, 2]
    alias = ledger.get_alias()
    assert alias is not None
    assert alias.version == 2


def test_move_alias_refuses_missing_or_mismatched_artifacts(ledger: Ledger) -> None:
    model, index = _pair(ledger, "1")
    dataset = ledger.record_artifact("dataset", "file:///d", "d1")
    ledger.move_alias("champion", model.id, index.id, moved_by="a", reason="r")
    before = _alias_state(ledger)
    model2, index2 = _pair(ledger, "2")

    with pytest.raises(LedgerError, match="artifact 9999 does not exist"):
        ledger.move_alias("champion", model2.id, 9999, moved_by="a", reason="r")
    with pytest.raises(LedgerError, match="is a 'dataset', not a 'index'"):
        ledger.move_alias("champion", model2.id, dataset.id, moved_by="a", reason="r")
    with pytest.raises(LedgerError, match="is a 'index', not a 'model'"):
        ledger.move_alias("champion", index2.id, model2.id, moved_by="a", reason="r")
    with pytest.raises(LedgerError, match="unknown run"):
        ledger.move_alias("champion", model2.id, index2.id, moved_by="a", reason="r", run_id="x")
    assert _alias_state(ledger) == before


def test_a_failure_after_the_alias_row_is_written_rolls_the_move_back(ledger: Ledger) -> None:
    model1, index1 = _pair(ledger, "1")
    model2, index2 = _pair(ledger, "2")
    ledger.move_alias("champion", model1.id, index1.id, moved_by="a", reason="r")
    before = _alias_state(ledger)
    events: list[str] = []

    def alias_written(*_: Any) -> None:
        events.append("alias updated")

    def history_fails(*_: Any) -> None:
        events.append("history insert")
        raise RuntimeError("connection lost")

    # The ORM's own hooks stand in for a crash between the two writes.
    sa.event.listen(Alias, "after_update", alias_written)
    sa.event.listen(AliasHistory, "before_insert", history_fails)
    try:
        with pytest.raises(RuntimeError, match="connection lost"):
            ledger.move_alias("champion", model2.id, index2.id, moved_by="b", reason="r")
    finally:
        sa.event.remove(AliasHistory, "before_insert", history_fails)
        sa.event.remove(Alias, "after_update", alias_written)

    assert events == ["alias updated", "history insert"]
    assert _alias_state(ledger) == before


# validation


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lg: lg.finish_run("r1", "DONE"), "outcome 'DONE' is not one of: OK, PROMOTED"),
        (lambda lg: lg.finish_run("r1", "RUNNING"), "outcome 'RUNNING' is not one of"),
        (lambda lg: lg.finish_run("r1", "BLOCKED"), "BLOCKED needs the blocked_gate"),
        (lambda lg: lg.record_gate("r1", "g", "ok"), "gate status 'ok' is not one of: pass"),
        (
            lambda lg: lg.record_approval(
                "r1", "yes", "alice", model_sha256="m", index_sha256="i", via="hitl"
            ),
            "decision 'yes' is not one of: approved, rejected",
        ),
        (
            lambda lg: lg.record_approval(
                "r1", "approved", "alice", model_sha256="m", index_sha256="i", via="email"
            ),
            "approval channel 'email' is not one of: policy, hitl, cli, timeout",
        ),
        (
            lambda lg: lg.move_alias("champion", 1, 2, moved_by="a", reason="r", action="undo"),
            "alias action 'undo' is not one of: promote, rollback",
        ),
        (
            lambda lg: lg.record_gate("r1", "g", "pass", metrics={"ndcg": float("nan")}),
            "metrics must be JSON-serialisable",
        ),
        (
            lambda lg: lg.update_lineage("r1", started=datetime.now(UTC)),
            "lineage must be JSON-serialisable",
        ),
    ],
    ids=[
        "outcome",
        "running-is-not-final",
        "blocked-without-gate",
        "gate-status",
        "decision",
        "via",
        "action",
        "nan-metric",
        "non-json-lineage",
    ],
)
def test_bad_values_raise_a_clear_ledger_error(
    ledger: Ledger, call: Callable[[Ledger], object], message: str
) -> None:
    ledger.start_run("r1", "retrain")
    before = ledger.get_run("r1")
    with pytest.raises(LedgerError, match=message.replace("(", r"\(")):
        call(ledger)
    assert ledger.get_run("r1") == before
    assert ledger.gate_results("r1") == []
    assert ledger.approvals("r1") == []


def test_unsupported_databases_are_refused() -> None:
    with pytest.raises(LedgerError, match="not supported"):
        Ledger("mysql+pymysql://u@localhost/db")
