"""The hash chain: a normal history verifies; edits made behind the ledger's back are named."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from signing_support import approvers, signer

from shelfguard.config import Settings
from shelfguard.ledger import Ledger, LedgerTampered, alembic_config, open_ledger
from shelfguard.model.approval import record_decision
from shelfguard.model.promotion import PromotionRefused, check_promotion, promote, rollback
from shelfguard.policy import parse_policy

GATES = ["ingest", "raw_data", "training_data", "evaluation", "index"]
#: The run's policy, as bytes the ledger keeps: signatures are checked against its keys.
POLICY_TEXT = json.dumps(
    {
        "version": 1,
        "required_gates": GATES,
        "approval": {"mode": "required", "approvers": approvers("alice", "bob")},
    }
)
POLICY = parse_policy(POLICY_TEXT.encode(), "governance.yml")


def _pinned(ledger: Ledger) -> Ledger:
    ledger.pin_policy(POLICY.sha256, POLICY_TEXT, POLICY.path)
    return ledger


def _reset_postgres(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP SCHEMA public CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


@pytest.fixture(params=("sqlite", "postgresql"))
def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Ledger]:
    """A migrated, empty ledger on SQLite or on the test PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
        _reset_postgres(url)
    store = _pinned(open_ledger(url))
    yield store
    store.dispose()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """A migrated SQLite ledger (the embedded runtime, whose file an attacker can edit)."""
    store = _pinned(open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}"))
    yield store
    store.dispose()


def _retraining_run(ledger: Ledger, name: str, *, evaluation: str = "pass") -> str:
    run_id = f"search_model_retraining/{name}"
    model, index = f"m-{name}", f"i-{name}"
    ledger.start_run(run_id, "search_model_retraining", triggered_by="carol")
    ledger.record_gate(run_id, "training_data", "pass", subject="data:snap1")
    ledger.record_artifact("model", f"/models/{name}", model, produced_by_run=run_id)
    ledger.record_artifact(
        "index", f"/indexes/{name}", index, produced_by_run=run_id, meta={"model_sha256": model}
    )
    ledger.update_lineage(run_id, data_snapshot_id="snap1", model_sha256=model, index_sha256=index)
    ledger.record_gate(run_id, "evaluation", evaluation, subject=f"model:{model}")
    ledger.record_gate(run_id, "index", "pass", subject=f"index:{index}")
    return run_id


def _history(ledger: Ledger) -> dict[str, str]:
    """Two promotions, a rollback, a replaced verdict, a failed run and an approved candidate."""
    ledger.start_run("catalog_refresh/snap1", "catalog_refresh", triggered_by="cron")
    for gate, subject in (("ingest", "batch:1"), ("raw_data", "batch:1")):
        ledger.record_gate("catalog_refresh/snap1", gate, "pass", subject=subject)
    ledger.record_gate("catalog_refresh/snap1", "training_data", "pass", subject="data:snap1")
    run_a = _retraining_run(ledger, "a", evaluation="fail")
    # A replaced verdict: the new one gets its own chain entry.
    ledger.record_gate(run_a, "evaluation", "pass", subject="model:m-a", metrics={"ndcg": 0.5})
    record_decision(ledger, POLICY, run_a, "approved", "alice", via="cli", signer=signer("alice"))
    promote(ledger, POLICY, run_a)
    run_b = _retraining_run(ledger, "b")
    record_decision(
        ledger, POLICY, run_b, "rejected", "bob", via="cli", signer=signer("bob"), comment="wait"
    )
    record_decision(ledger, POLICY, run_b, "approved", "alice", via="cli", signer=signer("alice"))
    promote(ledger, POLICY, run_b)
    rollback(ledger, POLICY, signer=signer("bob"), reason="b answers worse")
    bad = _retraining_run(ledger, "bad", evaluation="fail")
    run_c = _retraining_run(ledger, "c")
    record_decision(ledger, POLICY, run_c, "approved", "alice", via="cli", signer=signer("alice"))
    return {"a": run_a, "b": run_b, "bad": bad, "c": run_c}


def _sql(ledger: Ledger, statement: str, **params: object) -> None:
    with ledger.engine.begin() as connection:
        connection.execute(sa.text(statement), params)


def _one(ledger: Ledger, statement: str, **params: object) -> object:
    with ledger.engine.connect() as connection:
        return connection.execute(sa.text(statement), params).scalar_one()


def _count(ledger: Ledger, table: str) -> int:
    return int(str(_one(ledger, f"SELECT count(*) FROM {table}")))


def test_a_normal_history_verifies(any_ledger: Ledger) -> None:
    runs = _history(any_ledger)
    report = any_ledger.verify()
    assert report.ok, report.problems
    # Every gate verdict, the replaced one twice, every approval and every move.
    chained = _count(any_ledger, "gate_results") + 1
    chained += _count(any_ledger, "approvals") + _count(any_ledger, "alias_history")
    assert report.entries == chained
    assert report.head is not None
    champion = any_ledger.verify_champion()
    assert champion is not None
    assert (champion.version, champion.model.sha256) == (3, "m-a")
    assert check_promotion(any_ledger, POLICY, runs["c"]).model.sha256 == "m-c"


def test_no_op_writes_append_nothing(ledger: Ledger) -> None:
    runs = _history(ledger)
    before = _count(ledger, "chain")
    ledger.record_gate(runs["c"], "index", "pass", subject="index:i-c")  # same verdict again
    record_decision(
        ledger, POLICY, runs["c"], "approved", "alice", via="cli", signer=signer("alice")
    )  # a retry
    champion = ledger.get_alias()
    assert champion is not None
    ledger.move_alias("champion", champion.model.id, champion.index.id, moved_by="x", reason="r")
    assert _count(ledger, "chain") == before
    ledger.record_gate(runs["c"], "index", "warn", subject="index:i-c")  # a new verdict
    assert _count(ledger, "chain") == before + 1
    assert ledger.verify().ok


def _tamper_alias(ledger: Ledger) -> tuple[str, str]:
    model_id = _one(ledger, "SELECT id FROM artifacts WHERE sha256 = 'm-bad'")
    index_id = _one(ledger, "SELECT id FROM artifacts WHERE sha256 = 'i-bad'")
    _sql(
        ledger,
        "UPDATE aliases SET model_artifact_id = :m, index_artifact_id = :i WHERE name = 'champion'",
        m=model_id,
        i=index_id,
    )
    return "aliases", "champion"


def _fabricate_history(ledger: Ledger) -> tuple[str, str]:
    model_id = _one(ledger, "SELECT id FROM artifacts WHERE sha256 = 'm-bad'")
    index_id = _one(ledger, "SELECT id FROM artifacts WHERE sha256 = 'i-bad'")
    # The thorough forger writes a history row and moves the alias to match it.
    _sql(
        ledger,
        "INSERT INTO alias_history (alias, version, action, model_artifact_id, index_artifact_id,"
        " moved_by, moved_at, reason) VALUES ('champion', 4, 'promote', :m, :i, 'alice',"
        " '2026-12-01 00:00:00.000000', 'looks legit')",
        m=model_id,
        i=index_id,
    )
    _sql(
        ledger,
        "UPDATE aliases SET version = 4, model_artifact_id = :m, index_artifact_id = :i",
        m=model_id,
        i=index_id,
    )
    return "alias_history", str(_one(ledger, "SELECT max(id) FROM alias_history"))


def _pass_failed_gate(ledger: Ledger) -> tuple[str, str]:
    gate_id = _one(
        ledger,
        "SELECT id FROM gate_results WHERE run_id = 'search_model_retraining/bad'"
        " AND gate = 'evaluation'",
    )
    _sql(ledger, "UPDATE gate_results SET status = 'pass' WHERE id = :id", id=gate_id)
    return "gate_results", str(gate_id)


def _forge_approver(ledger: Ledger) -> tuple[str, str]:
    approval_id = _one(ledger, "SELECT min(id) FROM approvals")
    _sql(ledger, "UPDATE approvals SET decided_by = 'mallory' WHERE id = :id", id=approval_id)
    return "approvals", str(approval_id)


def _delete_chain_entry(ledger: Ledger) -> tuple[str, str]:
    _sql(ledger, "DELETE FROM chain WHERE id = 3")
    return "chain", "4"


def _delete_approval(ledger: Ledger) -> tuple[str, str]:
    approval_id = _one(
        ledger,
        "SELECT id FROM approvals WHERE decision = 'rejected'",
    )
    _sql(ledger, "DELETE FROM approvals WHERE id = :id", id=approval_id)
    return "approvals", str(approval_id)


ATTACKS = {
    "alias-repointed": (_tamper_alias, "points at v3"),
    "history-fabricated": (_fabricate_history, "has no chain entry"),
    "gate-fail-to-pass": (_pass_failed_gate, "edited outside the ledger"),
    "approver-forged": (_forge_approver, "edited outside the ledger"),
    "chain-entry-deleted": (_delete_chain_entry, "does not follow the entry before it"),
    "approval-deleted": (_delete_approval, "deleted"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_each_attack_is_named_and_refuses_promotion_and_rollback(
    ledger: Ledger, attack: str
) -> None:
    runs = _history(ledger)
    assert ledger.verify().ok
    tamper, what = ATTACKS[attack]
    table, row_id = tamper(ledger)

    report = ledger.verify()
    assert not report.ok
    assert report.first is not None
    assert (report.first.table, report.first.row_id) == (table, row_id)
    assert what in report.first.problem
    assert f"{table} row {row_id}" in str(report.first)

    with pytest.raises(LedgerTampered, match=f"{table} row {row_id}"):
        ledger.verify_champion()
    with pytest.raises(PromotionRefused) as refused:
        promote(ledger, POLICY, runs["c"])
    assert refused.value.tampered
    assert f"{table} row {row_id}" in refused.value.missing[0]
    with pytest.raises(PromotionRefused) as refused:
        rollback(ledger, POLICY, signer=signer("bob"), to_version=2)
    assert refused.value.tampered
    assert ledger.get_alias() is not None


def test_a_ledger_migrated_from_0002_verifies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    config = alembic_config()
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0002")
    engine = sa.create_engine(url)
    statements = [
        "INSERT INTO runs (run_id, dag_id, started_at, outcome, lineage) VALUES"
        " ('r1', 'search_model_retraining', '2026-11-30 10:00:00.000000', 'PROMOTED', '{}')",
        "INSERT INTO artifacts (id, kind, uri, sha256, created_at, meta) VALUES"
        " (1, 'model', '/m', 'm1', '2026-11-30 10:01:00.000000', '{}'),"
        " (2, 'index', '/i', 'i1', '2026-11-30 10:01:00.000000', '{\"model_sha256\": \"m1\"}')",
        # Ids and timestamps deliberately out of step: gate 2 was replaced last.
        "INSERT INTO gate_results (id, run_id, gate, subject, status, checks, metrics,"
        " report_uri, created_at) VALUES"
        " (1, 'r1', 'evaluation', 'model:m1', 'pass', '[{\"name\": \"ndcg\"}]',"
        " '{\"ndcg\": 0.61}', NULL, '2026-11-30 10:02:00.000000'),"
        " (2, 'r1', 'index', 'index:i1', 'pass', '[]', '{}', 'file:///r.html',"
        " '2026-11-30 10:09:00.000000')",
        "INSERT INTO approvals (id, run_id, model_sha256, index_sha256, decision, decided_by,"
        " decided_at, comment, via, policy_sha256) VALUES (1, 'r1', 'm1', 'i1', 'approved',"
        " 'alice', '2026-11-30 10:05:00.123456', 'ok', 'cli', 'pp')",
        "INSERT INTO aliases (name, version, model_artifact_id, index_artifact_id, run_id,"
        " updated_at, updated_by) VALUES ('champion', 1, 1, 2, 'r1',"
        " '2026-11-30 10:06:00.000000', 'alice')",
        "INSERT INTO alias_history (id, alias, version, action, model_artifact_id,"
        " index_artifact_id, run_id, moved_by, moved_at, reason) VALUES (1, 'champion', 1,"
        " 'promote', 1, 2, 'r1', 'alice', '2026-11-30 10:06:00.000000', 'first')",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(sa.text(statement))
    engine.dispose()

    ledger = open_ledger(url)
    try:
        report = ledger.verify()
        assert report.ok, report.problems
        assert report.entries == 4
        with ledger.engine.connect() as connection:
            order = connection.execute(sa.text("SELECT kind, ref_id FROM chain ORDER BY id")).all()
        assert [tuple(row) for row in order] == [
            ("gate", 1),
            ("approval", 1),
            ("alias_move", 1),
            ("gate", 2),
        ]
        # New writes extend the migrated chain.
        ledger.record_gate("r1", "index", "warn", subject="index:i1")
        assert ledger.verify().ok
        assert ledger.verify().entries == 5
        _sql(ledger, "UPDATE gate_results SET status = 'pass' WHERE id = 2")
        first = ledger.verify().first
        assert first is not None
        assert (first.table, first.row_id) == ("gate_results", "2")
    finally:
        ledger.dispose()


def test_cli_verify_status_and_search_exit_codes(
    sg_home: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from shelfguard.cli import main

    ledger = _pinned(open_ledger(sg_home.ledger_url))
    try:
        _history(ledger)
    finally:
        ledger.dispose()
    capsys.readouterr()

    assert main(["verify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["entries"] > 0
    assert main(["verify"]) == 0
    assert "OK: the ledger verifies" in capsys.readouterr().out
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ledger"]["intact"] is True

    ledger = open_ledger(sg_home.ledger_url)
    try:
        table, row_id = _pass_failed_gate(ledger)
    finally:
        ledger.dispose()

    assert main(["verify", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["first_problem"]["table"] == table
    assert report["first_problem"]["row_id"] == row_id
    assert main(["verify"]) == 1
    assert f"TAMPERED: {table} row {row_id}" in capsys.readouterr().out
    assert main(["status"]) == 1
    assert "TAMPERED" in capsys.readouterr().out
    assert main(["status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["ledger"]["intact"] is False
    assert main(["search", "oak desk"]) == 1
    err = capsys.readouterr().err.replace("\n", " ")
    assert f"refusing to search: ledger failed verification: {table} row {row_id}" in err
