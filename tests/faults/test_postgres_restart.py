"""PostgreSQL restarts under the ledger and the warehouse: finished or failed, never half-written.

Every test starts its own PostgreSQL (``pg_server.PgServer``: ``initdb`` into a temporary
folder, its own port and socket; never the machine's shared service) and kills it for
real: ``pg_ctl stop -m immediate`` is a crash (every backend dies at once, the next start
recovers from the WAL), ``pg_ctl restart -m immediate`` a crash and a restart. Nothing
of PostgreSQL is mocked; a lock another session holds only pauses a write at a known
statement, so that the crash lands inside its transaction.

What must hold after every crash:

- the call that met the dead server either finished or raised; a retry once the server
  is back succeeds on its first call (the ledger's pool pings its connections);
- the ledger's hash chain verifies, and the champion alias agrees with its history:
  a promotion is all of (alias, alias_history row, chain entry) or none of them, and a
  retried promotion never adds a second version;
- an ingest batch is ONE warehouse transaction: the warehouse has all of its rows or
  none; the ledger records only files whose rows are there; the rerun loads every file
  exactly once.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pg_server import PgServer
from signing_support import approvers, signer

from shelfguard.data.generator import generate
from shelfguard.data.ingest import SPECS, IngestManifest, ingest
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.model.approval import record_decision
from shelfguard.model.promotion import ALIAS, check_promotion, promote
from shelfguard.policy import Policy, parse_policy

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GATES = ["ingest", "raw_data", "training_data", "evaluation", "index"]
PSEUDONYM_KEY = b"fault-tests-pseudonym-key-32byte"
#: What a connection that met a dead (or restarting) server raises, through SQLAlchemy or
#: straight from psycopg2 (the warehouse's own connection).
DEAD_SERVER = (sa.exc.OperationalError, sa.exc.InterfaceError)


def _dead_server_errors() -> tuple[type[BaseException], ...]:
    import psycopg2

    return (*DEAD_SERVER, psycopg2.OperationalError, psycopg2.InterfaceError)


# --------------------------------------------------------------------------------------
# Helpers (the private server itself: the `server` fixture in conftest.py)
# --------------------------------------------------------------------------------------


def backend_pid(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def said(exc: BaseException) -> str:
    """The messages of ``exc`` and of the exceptions it was raised from or while handling."""
    messages: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(messages) < 10:
        messages.append(f"{type(seen).__name__}: {seen}")
        seen = seen.__cause__ or seen.__context__
    return "\n".join(messages)


# --------------------------------------------------------------------------------------
# A promotable run (the few helpers of tests/unit/test_promotion.py this needs)
# --------------------------------------------------------------------------------------

_TEXTS: dict[str, str] = {}


def policy() -> Policy:
    """The policy a run pins: every gate required, alice and bob approve, signed."""
    text = json.dumps(
        {
            "version": 1,
            "required_gates": GATES,
            "approval": {"mode": "required", "approvers": approvers("alice", "bob")},
        }
    )
    parsed = parse_policy(text.encode(), "governance.yml")
    _TEXTS[parsed.sha256] = text
    return parsed


def refresh_run(ledger: Ledger, snapshot: str = "snap1") -> str:
    """A catalog_refresh run whose data gates passed on ``snapshot``."""
    run_id = f"catalog_refresh/{snapshot}"
    ledger.start_run(run_id, "catalog_refresh", triggered_by="cron", lineage={})
    ledger.record_gate(run_id, "ingest", "pass", subject="batch:1")
    ledger.record_gate(run_id, "raw_data", "pass", subject="batch:1")
    ledger.record_gate(run_id, "training_data", "pass", subject=f"data:{snapshot}")
    return run_id


def approved_run(ledger: Ledger, pol: Policy, name: str, snapshot: str = "snap1") -> str:
    """A retraining run of model ``m-<name>`` + index ``i-<name>``, every gate passed,
    approved by alice with her signature: ready to promote."""
    run_id = f"search_model_retraining/{name}"
    model, index = f"m-{name}", f"i-{name}"
    ledger.start_run(run_id, "search_model_retraining", triggered_by="carol", lineage={})
    ledger.record_gate(run_id, "training_data", "pass", subject=f"data:{snapshot}")
    ledger.record_artifact("model", f"/models/{name}", model, produced_by_run=run_id)
    ledger.record_artifact(
        "index", f"/indexes/{name}", index, produced_by_run=run_id, meta={"model_sha256": model}
    )
    ledger.update_lineage(run_id, data_snapshot_id=snapshot, model_sha256=model, index_sha256=index)
    ledger.record_gate(run_id, "evaluation", "pass", subject=f"model:{model}")
    ledger.record_gate(run_id, "index", "pass", subject=f"index:{index}")
    ledger.pin_policy(pol.sha256, _TEXTS[pol.sha256], pol.path)
    record_decision(ledger, pol, run_id, "approved", "alice", via="cli", signer=signer("alice"))
    return run_id


def champion_state(ledger: Ledger) -> tuple[int, str, str] | None:
    alias = ledger.get_alias(ALIAS)
    return None if alias is None else (alias.version, alias.model.sha256, alias.index.sha256)


def assert_consistent(ledger: Ledger) -> list[tuple[int, str]]:
    """The chain verifies and the alias is where its last recorded move put it;
    returns the history as (version, model sha256), versions 1..n without a gap."""
    report = ledger.verify()
    assert report.ok, [str(p) for p in report.problems]
    history = ledger.alias_history(ALIAS)
    versions = [move.version for move in history]
    assert versions == list(range(1, len(history) + 1)), versions
    shas = {}
    for move in history:
        model = ledger.get_artifact(move.model_artifact_id)
        assert model is not None
        shas[move.version] = model.sha256
    alias = ledger.get_alias(ALIAS)
    if not history:
        assert alias is None
        return []
    assert alias is not None
    last = history[-1]
    assert (alias.version, alias.model.id, alias.index.id) == (
        last.version,
        last.model_artifact_id,
        last.index_artifact_id,
    )
    return [(move.version, shas[move.version]) for move in history]


@pytest.fixture
def ledger(server: PgServer) -> Iterator[Ledger]:
    """A migrated ledger in its own database on the private server."""
    opened = open_ledger(server.create_database("ledger"))
    try:
        yield opened
    finally:
        opened.dispose()


# --------------------------------------------------------------------------------------
# The ledger
# --------------------------------------------------------------------------------------


def test_a_write_after_a_crash_restart_reconnects_on_its_first_call(
    server: PgServer, ledger: Ledger
) -> None:
    run_id = refresh_run(ledger)
    before = backend_pid(ledger.engine)
    postmaster = server.postmaster_pid()

    server.restart("immediate")  # every backend dies; recovery from the WAL

    assert server.postmaster_pid() != postmaster
    # The pooled connection is dead; the pool's ping on checkout replaces it, so the
    # very first write after the restart succeeds.
    gate = ledger.record_gate(run_id, "ingest", "pass", subject="batch:2")
    assert gate.status == "pass"
    assert backend_pid(ledger.engine) != before
    assert [(g.gate, g.subject) for g in ledger.gate_results(run_id)] == [
        ("ingest", "batch:1"),
        ("raw_data", "batch:1"),
        ("training_data", "data:snap1"),
        ("ingest", "batch:2"),
    ]
    assert ledger.verify().ok


def test_a_write_to_a_dead_server_raises_and_the_retry_writes_it_once(
    server: PgServer, ledger: Ledger
) -> None:
    run_id = refresh_run(ledger)
    server.crash()

    with pytest.raises(sa.exc.OperationalError, match="Connection refused"):
        ledger.record_gate(run_id, "evaluation", "pass", subject="model:m")
    with pytest.raises(sa.exc.OperationalError):
        ledger.finish_run(run_id, "OK")

    server.start()
    ledger.record_gate(run_id, "evaluation", "pass", subject="model:m")
    ledger.finish_run(run_id, "OK")
    gates = ledger.gate_results(run_id)
    assert [g.gate for g in gates].count("evaluation") == 1
    run = ledger.get_run(run_id)
    assert run is not None and run.outcome == "OK"
    assert ledger.verify().ok


def test_a_crash_inside_the_promotion_transaction_keeps_the_old_champion(
    server: PgServer, ledger: Ledger
) -> None:
    pol = policy()
    refresh_run(ledger)
    first, second = approved_run(ledger, pol, "a"), approved_run(ledger, pol, "b")
    assert promote(ledger, pol, first).version == 1

    # Another session holds the chain table: the promotion of `second` writes its alias
    # row and its alias_history row, then waits to insert its chain entry.
    holder = sa.create_engine(ledger.engine.url, poolclass=sa.pool.NullPool)
    hold = holder.connect()
    hold.execute(sa.text("LOCK TABLE chain IN EXCLUSIVE MODE"))
    outcome: dict[str, Any] = {}

    def run_promotion() -> None:
        try:
            outcome["alias"] = promote(ledger, pol, second)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run_promotion, daemon=True)
    try:
        thread.start()

        def waiting_on_chain() -> bool:
            # From another connection, each look in its own transaction: a transaction
            # keeps seeing the pg_stat_activity of its first look.
            with holder.connect() as look:
                rows = look.execute(
                    sa.text(
                        "SELECT a.query FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                        "WHERE NOT l.granted AND l.relation = 'chain'::regclass"
                    )
                ).all()
            return any("INSERT INTO chain" in str(query) for (query,) in rows)

        wait_for("the promotion to wait on its chain entry", waiting_on_chain)
        # Inside that transaction, the alias is already moved (not committed).
        server.crash()
        thread.join(timeout=60)
        assert not thread.is_alive()
    finally:
        hold.invalidate()
        holder.dispose()

    assert "alias" not in outcome, "the promotion reported success on a crashed server"
    error = outcome["error"]
    assert isinstance(error, DEAD_SERVER), repr(error)
    # It died inside the transaction, on the statement it waited at.
    assert "server closed the connection unexpectedly" in str(error), said(error)
    assert "INSERT INTO chain" in str(error), said(error)

    server.start()
    # Nothing of the interrupted move survived: the champion is `first` at version 1,
    # with one history row, and the chain verifies.
    assert champion_state(ledger) == (1, "m-a", "i-a")
    assert assert_consistent(ledger) == [(1, "m-a")]

    # The retry moves it, once; a second retry is a no-op.
    assert promote(ledger, pol, second).version == 2
    assert promote(ledger, pol, second).version == 2
    assert champion_state(ledger) == (2, "m-b", "i-b")
    assert assert_consistent(ledger) == [(1, "m-a"), (2, "m-b")]


def test_a_restart_between_the_check_and_the_alias_move(server: PgServer, ledger: Ledger) -> None:
    pol = policy()
    refresh_run(ledger)
    run_id = approved_run(ledger, pol, "c")
    candidate = check_promotion(ledger, pol, run_id)

    server.restart("immediate")

    # What promote() does after its check, on a ledger whose connections all died.
    moved = ledger.move_alias(
        ALIAS,
        candidate.model.id,
        candidate.index.id,
        moved_by=candidate.approval.decided_by,
        reason=f"run {run_id}: every required gate passed",
        run_id=run_id,
        expected_version=0,
    )
    assert (moved.version, moved.model.sha256, moved.index.sha256) == (1, "m-c", "i-c")
    assert assert_consistent(ledger) == [(1, "m-c")]


@dataclass
class _Promoter:
    """Promotes a, b, a, b... one after the other, each retried until it succeeds."""

    ledger: Ledger
    policy: Policy
    runs: tuple[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    intended: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unexpected: list[BaseException] = field(default_factory=list)

    def wait_for_one_more(self) -> None:
        """Wait until one more promotion succeeded (the writer is alive and moving)."""
        done = len(self.intended)
        wait_for("one more promotion", lambda: len(self.intended) > done or bool(self.unexpected))
        assert not self.unexpected, self.unexpected

    def __call__(self) -> None:
        dead = _dead_server_errors()
        turn = 0
        while not self.stop.is_set():
            run_id = self.runs[turn % 2]
            while True:
                try:
                    promote(self.ledger, self.policy, run_id)
                    break
                except dead as exc:
                    self.failures.append(type(exc).__name__)
                    time.sleep(0.05)
                except BaseException as exc:
                    self.unexpected.append(exc)
                    return
            self.intended.append(run_id.rsplit("/", 1)[1])
            turn += 1


def test_promotions_through_repeated_crash_restarts_are_each_recorded_once(
    server: PgServer, ledger: Ledger
) -> None:
    pol = policy()
    refresh_run(ledger)
    runs = (approved_run(ledger, pol, "a"), approved_run(ledger, pol, "b"))
    promoter = _Promoter(ledger, pol, runs)
    thread = threading.Thread(target=promoter, daemon=True)
    rng = random.Random(20)
    restarts = 6
    thread.start()
    try:
        for _ in range(restarts):
            promoter.wait_for_one_more()
            time.sleep(rng.uniform(0.0, 0.3))
            server.restart("immediate")
        promoter.wait_for_one_more()
    finally:
        promoter.stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()
    assert not promoter.unexpected, promoter.unexpected

    # Every promotion the writer asked for is in the history exactly once, in order:
    # a move whose commit was cut off either was kept (the retry found the alias there,
    # a no-op) or was not (the retry made it); never twice, never half.
    history = assert_consistent(ledger)
    assert [sha.removeprefix("m-") for _, sha in history] == promoter.intended
    assert champion_state(ledger) is not None
    # The crashes hit promotions in flight: a test that never interrupted one proves nothing.
    assert promoter.failures, "no promotion met a crashed server"
    print(
        f"{restarts} crash-restarts, {len(history)} promotions recorded, "
        f"{len(promoter.failures)} attempts met a dead server: {sorted(set(promoter.failures))}"
    )


# --------------------------------------------------------------------------------------
# The warehouse: one ingest batch, one transaction
# --------------------------------------------------------------------------------------


@dataclass
class _Stores:
    warehouse: str
    ledger: Ledger


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five generated files, some lines quarantined; about 2 s to load into PostgreSQL."""
    out = tmp_path_factory.mktemp("source")
    return generate(out, products=3000, seed=5, defects=["bad_numbers", "ragged_rows"]).out_dir


@pytest.fixture
def stores(server: PgServer) -> Iterator[_Stores]:
    """A warehouse and a ledger, each its own database on the private server."""
    warehouse = server.create_database("warehouse")
    opened = open_ledger(server.create_database("ledger"))
    try:
        yield _Stores(warehouse, opened)
    finally:
        opened.dispose()


def batch_rows(url: str, batch_id: str) -> dict[str, tuple[int, int, int]]:
    """Per raw table of the (fresh, one-source) warehouse: (raw rows, distinct (file,
    line) among them, quarantined lines); a table that does not exist counts 0. Every
    row must belong to ``batch_id``."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    counts: dict[str, tuple[int, int, int]] = {}
    try:
        with engine.connect() as conn:
            for spec in SPECS:
                if not sa.inspect(conn).has_table(spec.table, schema="raw"):
                    counts[spec.table] = (0, 0, 0)
                    continue
                raw = conn.execute(
                    sa.text(
                        "SELECT count(*), count(DISTINCT (_file_sha256, _line_number)), "
                        f"count(*) FILTER (WHERE _batch_id <> :b) FROM raw.{spec.table}"
                    ),
                    {"b": batch_id},
                ).one()
                quarantine = conn.execute(
                    sa.text(
                        "SELECT count(*), count(*) FILTER (WHERE batch_id <> :b) "
                        f"FROM quarantine.{spec.table}"
                    ),
                    {"b": batch_id},
                ).one()
                assert (raw[2], quarantine[1]) == (0, 0), f"rows of another batch in {spec.table}"
                counts[spec.table] = (int(raw[0]), int(raw[1]), int(quarantine[0]))
    finally:
        engine.dispose()
    return counts


def expected_rows(manifest: IngestManifest) -> dict[str, tuple[int, int, int]]:
    counts = {spec.table: (0, 0, 0) for spec in SPECS}
    for f in manifest.files:
        counts[f.table.removeprefix("raw.")] = (
            f.rows_accepted,
            f.rows_accepted,
            f.rows_quarantined,
        )
    return counts


def assert_all_or_nothing(
    stores: _Stores, batch_id: str, full: dict[str, tuple[int, int, int]]
) -> str:
    """The warehouse holds all of the batch or none of it, and the ledger records only
    files whose rows are there. Returns "all" or "none"."""
    found = batch_rows(stores.warehouse, batch_id)
    empty = {table: (0, 0, 0) for table in full}
    assert found in (full, empty), f"a half-written batch: {found} (complete: {full})"
    recorded = stores.ledger.ingested_files(batch_id=batch_id)
    if found == empty:
        assert recorded == [], "the ledger records files the warehouse does not hold"
        return "none"
    for record in recorded:
        table = record.table_name.removeprefix("raw.")
        assert (record.rows_accepted, record.rows_accepted, record.rows_quarantined) == found[table]
    return "all"


def run_ingest(stores: _Stores, source: Path, **kwargs: Any) -> IngestManifest:
    return ingest(source, stores.warehouse, stores.ledger, pseudonym_key=PSEUDONYM_KEY, **kwargs)


def assert_rerun_loads_once(
    stores: _Stores, source: Path, full: dict[str, tuple[int, int, int]]
) -> None:
    manifest = run_ingest(stores, source)
    assert expected_rows(manifest) == full
    assert batch_rows(stores.warehouse, manifest.batch_id) == full
    recorded = stores.ledger.ingested_files(batch_id=manifest.batch_id)
    assert sorted(r.file_name for r in recorded) == sorted(f.file_name for f in manifest.files)
    # And again: a no-op.
    run_ingest(stores, source)
    assert batch_rows(stores.warehouse, manifest.batch_id) == full
    assert len(stores.ledger.ingested_files()) == len(manifest.files)


@pytest.fixture(scope="module")
def full_batch(source: Path, tmp_path_factory: pytest.TempPathFactory) -> IngestManifest:
    """The batch's manifest from a load without faults (into a DuckDB file): what
    "all of the batch" is."""
    folder = tmp_path_factory.mktemp("reference")
    reference = open_ledger(f"sqlite:///{folder / 'ledger.sqlite'}")
    try:
        return ingest(source, folder / "warehouse.duckdb", reference, pseudonym_key=PSEUDONYM_KEY)
    finally:
        reference.dispose()


def _crash_at(stage: str, action: Callable[[], None]) -> Callable[..., None]:
    """A progress callback that runs ``action`` (a crash) the first time ``stage`` starts."""
    fired: list[str] = []

    def progress(what: str, _done: int, _total: int) -> None:
        if what == stage and not fired:
            fired.append(what)
            action()

    return progress


def test_a_crash_in_the_middle_of_the_batch_transaction_writes_none_of_it(
    server: PgServer, stores: _Stores, source: Path, full_batch: IngestManifest
) -> None:
    full = expected_rows(full_batch)
    # products, queries and labels are copied (uncommitted) when the server dies.
    progress = _crash_at("loading search_log.csv into PostgreSQL", server.crash)
    with pytest.raises(_dead_server_errors()) as raised:
        run_ingest(stores, source, progress=progress)
    # The server's own error, not a failed rollback of the connection it closed.
    assert "server closed the connection unexpectedly" in str(raised.value)

    server.start()
    assert assert_all_or_nothing(stores, full_batch.batch_id, full) == "none"
    assert_rerun_loads_once(stores, source, full)


def test_a_crash_restart_in_the_middle_of_the_batch_fails_it_and_the_rerun_loads_it(
    server: PgServer, stores: _Stores, source: Path, full_batch: IngestManifest
) -> None:
    full = expected_rows(full_batch)
    progress = _crash_at("loading label.csv into PostgreSQL", server.restart)
    with pytest.raises(_dead_server_errors()) as raised:
        run_ingest(stores, source, progress=progress)
    assert "server closed the connection unexpectedly" in said(raised.value)

    # The server is already back: nothing of the batch, and the rerun needs no wait.
    assert assert_all_or_nothing(stores, full_batch.batch_id, full) == "none"
    assert_rerun_loads_once(stores, source, full)


def test_a_crash_after_the_warehouse_committed_is_rolled_forward_by_the_rerun(
    server: PgServer, stores: _Stores, source: Path, full_batch: IngestManifest
) -> None:
    full = expected_rows(full_batch)
    # The warehouse committed; the ledger (on the same, now dead, server) learns nothing.
    progress = _crash_at("recording manifest", server.crash)
    with pytest.raises(sa.exc.OperationalError, match="Connection refused"):
        run_ingest(stores, source, progress=progress)

    server.start()
    assert assert_all_or_nothing(stores, full_batch.batch_id, full) == "all"
    assert stores.ledger.ingested_files() == []
    # The rerun loads the files again, replacing the rows of the same content: once.
    assert_rerun_loads_once(stores, source, full)


def test_a_restart_before_the_manifest_is_recorded_lets_the_ingest_finish(
    server: PgServer, stores: _Stores, source: Path, full_batch: IngestManifest
) -> None:
    full = expected_rows(full_batch)
    postmaster = server.postmaster_pid()
    progress = _crash_at("recording manifest", server.restart)
    manifest = run_ingest(stores, source, progress=progress)
    assert server.postmaster_pid() != postmaster, "the server was not restarted"

    # The ledger's pooled connections died; their ping replaced them and the ingest ended.
    assert expected_rows(manifest) == full
    assert assert_all_or_nothing(stores, manifest.batch_id, full) == "all"
    assert len(stores.ledger.ingested_files(batch_id=manifest.batch_id)) == len(manifest.files)
    assert_rerun_loads_once(stores, source, full)


@pytest.mark.parametrize("delay", [0.2, 0.7, 1.2, 1.7, 2.4])
def test_a_crash_restart_at_any_moment_of_an_ingest(
    server: PgServer,
    stores: _Stores,
    source: Path,
    full_batch: IngestManifest,
    delay: float,
) -> None:
    """A restart from another thread, ``delay`` seconds into the load: wherever it lands
    (parsing, COPY, commit, the ledger), the ingest finishes or raises, the batch is
    all there or not at all, and the rerun loads it once."""
    full = expected_rows(full_batch)
    started = threading.Event()

    def restart_later() -> None:
        started.wait(30)
        time.sleep(delay)
        server.restart("immediate")

    postmaster = server.postmaster_pid()
    restarter = threading.Thread(target=restart_later, daemon=True)
    restarter.start()
    started.set()
    try:
        run_ingest(stores, source)
        ended = "finished"
    except _dead_server_errors() as exc:
        ended = f"raised {type(exc).__name__}"
    restarter.join(timeout=60)
    assert not restarter.is_alive()
    assert server.postmaster_pid() != postmaster, "the server was not restarted"

    held = assert_all_or_nothing(stores, full_batch.batch_id, full)
    if ended == "finished":
        assert held == "all"
    print(f"restart {delay}s into the ingest: it {ended}; the warehouse held {held} of the batch")
    assert_rerun_loads_once(stores, source, full)
