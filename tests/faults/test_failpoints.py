"""The failpoint matrix: SIGKILL at every boundary between two stores, rerun, check.

Each case copies one prepared home (a published snapshot, a gated candidate, a blocked
batch, a champion with two versions, a retraining run waiting for its registration),
runs one step in a process of its own with one failpoint armed, sees that process die
of SIGKILL at that point, runs the step again as an operator (or Airflow's retry) would,
and checks what shelfguard promises whatever happened in between:

- the ledger's hash chain verifies;
- every model and index the ledger names exists where it says, with its sha256;
- the ledger's load records and the warehouse's raw rows agree, file by file, row for
  row (nothing lost, nothing loaded twice);
- the snapshots the warehouse published are the ones the ledger knows; published,
  purged and retention-purged batches agree between the two;
- the champion is the old pair after the crash and the intended pair after the rerun,
  and no alias move or decision is recorded twice.

``docs/faults.md`` lists the points with what a rerun finds.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from signing_support import approvers, signer, write_keys
from steps import land

from shelfguard.airflow.tasks import publish_candidate
from shelfguard.config import Settings, load_settings, project_root
from shelfguard.data import publication
from shelfguard.data.generator import generate
from shelfguard.data.ingest import RETENTION_LOG
from shelfguard.failpoints import FAILPOINTS_ENV, POINTS
from shelfguard.gates import MART_TABLES
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.model import index as indexing
from shelfguard.model import training as modeling
from shelfguard.model.approval import record_decision
from shelfguard.model.promotion import promote
from shelfguard.policy_approval import approve as approve_policy
from shelfguard.quality import open_warehouse
from shelfguard.run_context import RunContext, pin_policy
from shelfguard_train.embed import INDEX_FILES, index_sha256
from shelfguard_train.model import model_sha256

CLI = str(Path(sys.executable).with_name("shelfguard"))
STEPS = str(Path(__file__).with_name("steps.py"))

PUBLISHED, CANDIDATE, BLOCKED = (f"catalog_refresh/base-{x}" for x in "abc")
FAULT_REFRESH, RERUN_REFRESH = "catalog_refresh/fault", "catalog_refresh/fault-rerun"
NEXT = "catalog_refresh/next"
V1, V2, NEW = (f"search_model_retraining/{x}" for x in ("v1", "v2", "new"))


@dataclass
class Home:
    """One copy of the prepared home: its folder and the environment that selects it."""

    root: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
        env.update(
            SHELFGUARD_HOME=str(self.root / "home"),
            SHELFGUARD_KEYS_DIR=str(self.root / "keys"),
            SHELFGUARD_POLICY=str(self.root / "governance.yml"),
        )
        return env

    @property
    def source(self) -> Path:
        return self.root / "sources"


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Home], tuple[Settings, Ledger]]]:
    """Point this process at a home; returns its settings and ledger."""
    opened: list[Ledger] = []

    def select(home: Home) -> tuple[Settings, Ledger]:
        for name in list(os.environ):
            if name.startswith("SHELFGUARD_"):
                monkeypatch.delenv(name)
        for name, value in home.env.items():
            if name.startswith("SHELFGUARD_"):
                monkeypatch.setenv(name, value)
        settings = load_settings()
        ledger = open_ledger(settings.ledger_url)
        opened.append(ledger)
        return settings, ledger

    yield select
    for ledger in opened:
        ledger.dispose()


# --------------------------------------------------------------------------------------
# The prepared home
# --------------------------------------------------------------------------------------


def _build_candidate(settings: Settings, ledger: Ledger, run_id: str) -> None:
    """The run's candidate marts (small tables of its batch) with passing data gates."""
    run = ledger.get_run(run_id)
    assert run is not None
    batch_id = str(run.lineage["batch_id"])
    schema = publication.snapshot_schema(run_id)
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        con.execute(f"CREATE SCHEMA {schema}")
        for table in MART_TABLES:
            con.execute(
                f"CREATE TABLE {schema}.{table} AS SELECT product_id, product_name "
                "FROM raw.products WHERE _batch_id = ?",
                [batch_id],
            )
    finally:
        con.close()
    with open_warehouse(settings.warehouse_url) as engine, engine.connect() as connection:
        fingerprint, tables = publication.fingerprint_tables(connection, schema, MART_TABLES)
    for gate, subject in (("ingest", f"batch:{batch_id}"), ("raw_data", f"batch:{batch_id}")):
        ledger.record_gate(run_id, gate, "pass", subject=subject)
    ledger.record_gate(
        run_id, "training_data", "pass", subject=f"data:{fingerprint}", metrics={"tables": tables}
    )
    ledger.set_batch_state(batch_id, "gated", run_id=run_id)


def _trained(settings: Settings, ledger: Ledger, run_id: str, fingerprint: str) -> None:
    """A retraining run whose model and index folders are written, gated, not registered."""
    policy = pin_policy(ledger, settings.home)
    ledger.start_run(
        run_id,
        "search_model_retraining",
        triggered_by="carol",
        lineage={"policy_sha256": policy.sha256, "snapshot_fingerprint": fingerprint},
    )
    folder = Path(str(modeling.run_dir(settings, run_id)))
    model_dir = folder / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"name": run_id}))
    (model_dir / "weights.bin").write_bytes(run_id.encode() * 64)
    _, index_path, result_path = indexing.embed_paths(settings, run_id)
    index_dir = Path(str(index_path))
    index_dir.mkdir(parents=True)
    for name in INDEX_FILES:
        (index_dir / name).write_bytes(f"{run_id}:{name}".encode())
    model_sha, index_sha = model_sha256(model_dir), index_sha256(index_dir)
    (folder / "train_result.json").write_text(
        json.dumps(
            {
                "model_dir": str(model_dir),
                "model_sha256": model_sha,
                "config_hash": "c",
                "base_model_sha256": "b",
                "data_snapshot_id": fingerprint,
                "metrics": {},
            }
        )
    )
    Path(str(result_path)).write_text(
        json.dumps(
            {
                "index_dir": str(index_dir),
                "index_sha256": index_sha,
                "model_sha256": model_sha,
                "dim": 8,
                "counts": {},
            }
        )
    )
    ledger.record_gate(run_id, "training_data", "pass", subject=f"data:{fingerprint}")
    ledger.record_gate(run_id, "evaluation", "pass", subject=f"model:{model_sha}")
    ledger.record_gate(run_id, "index", "pass", subject=f"index:{index_sha}")


def _register(settings: Settings, ledger: Ledger, run_id: str) -> None:
    modeling.register_model(settings, ledger, run_id)
    indexing.register_index(settings, ledger, run_id)


def _approve(settings: Settings, ledger: Ledger, run_id: str, by: str = "bob") -> None:
    policy = RunContext.for_run(run_id, settings=settings, ledger=ledger).policy
    record_decision(ledger, policy, run_id, "approved", by, via="cli", signer=signer(by))


def _build_base(home: Home, select: Callable[[Home], tuple[Settings, Ledger]]) -> None:
    write_keys(home.root / "keys", "alice", "bob")
    policy = yaml.safe_load((project_root() / "governance.yml").read_text())
    policy["approval"] = {"mode": "required", "approvers": approvers("alice", "bob")}
    (home.root / "governance.yml").write_text(yaml.safe_dump(policy, sort_keys=False))
    for name, seed in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        generate(home.source / name, products=120, seed=seed, defects=("ragged_rows",))
    settings, ledger = select(home)
    settings.ensure_dirs()
    approve_policy(ledger, home.root / "governance.yml", signer("alice"))

    land(settings, ledger, PUBLISHED, home.source / "a")
    _build_candidate(settings, ledger, PUBLISHED)
    snapshot = publish_candidate(RunContext.for_run(PUBLISHED, settings=settings, ledger=ledger))
    ledger.finish_run(PUBLISHED, "OK")

    land(settings, ledger, CANDIDATE, home.source / "b")
    _build_candidate(settings, ledger, CANDIDATE)
    land(settings, ledger, BLOCKED, home.source / "c")
    run = ledger.get_run(BLOCKED)
    assert run is not None
    ledger.set_batch_state(
        str(run.lineage["batch_id"]), "blocked", run_id=BLOCKED, gate="raw_data", reason="test"
    )
    ledger.finish_run(BLOCKED, "BLOCKED", blocked_gate="raw_data", message="test")
    ledger.finish_run(CANDIDATE, "OK")  # its publication is the fault cases' business
    # The quarantined search-log lines (personal data) are past their retention.
    con = duckdb.connect(str(settings.duckdb_path))
    try:
        aged = con.execute(
            "UPDATE quarantine.search_log SET quarantined_at = quarantined_at - INTERVAL 400 DAY"
        ).fetchone()
    finally:
        con.close()
    assert aged and aged[0] > 0, "the prepared home needs expired quarantined lines"

    for run_id in (V1, V2):
        _trained(settings, ledger, run_id, snapshot.fingerprint)
        _register(settings, ledger, run_id)
        _approve(settings, ledger, run_id, "alice")
        policy = RunContext.for_run(run_id, settings=settings, ledger=ledger).policy
        promote(ledger, policy, run_id)
        ledger.finish_run(run_id, "PROMOTED")
    _trained(settings, ledger, NEW, snapshot.fingerprint)
    ledger.dispose()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = Home(tmp_path_factory.mktemp("failpoints") / "base")
    home.root.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        opened: list[Ledger] = []

        def select(chosen: Home) -> tuple[Settings, Ledger]:
            for name, value in chosen.env.items():
                if name.startswith("SHELFGUARD_"):
                    patch.setenv(name, value)
            settings = load_settings()
            settings.ensure_dirs()
            ledger = open_ledger(settings.ledger_url)
            opened.append(ledger)
            return settings, ledger

        _build_base(home, select)
        for ledger in opened:
            ledger.dispose()
    yield home


# --------------------------------------------------------------------------------------
# The invariants
# --------------------------------------------------------------------------------------


def _warehouse(settings: Settings, sql: str, params: list[Any] | None = None) -> list[Any]:
    con = duckdb.connect(str(settings.duckdb_path), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _pair(ledger: Ledger) -> tuple[str, str] | None:
    alias = ledger.get_alias("champion")
    return None if alias is None else (alias.model.sha256, alias.index.sha256)


def _run_pair(ledger: Ledger, run_id: str) -> tuple[str, str]:
    (model,) = [a for a in ledger.artifacts(kinds=("model",)) if a.produced_by_run == run_id]
    (index,) = [a for a in ledger.artifacts(kinds=("index",)) if a.produced_by_run == run_id]
    return model.sha256, index.sha256


def check_invariants(settings: Settings, ledger: Ledger) -> None:
    report = ledger.verify()
    assert report.ok, [str(p) for p in report.problems]

    for artifact in ledger.artifacts(kinds=("model", "index")):
        folder = Path(artifact.uri)
        assert folder.is_dir(), f"{artifact.kind} {artifact.sha256[:12]}: {folder} is missing"
        digest = model_sha256 if artifact.kind == "model" else index_sha256
        assert digest(folder) == artifact.sha256, f"{folder} does not hold its content"

    # Raw rows, file by file, against the ledger's load records.
    records = ledger.ingested_files()
    loads = {(f.table_name, f.sha256): f.rows_accepted for f in records if f.rows_accepted}
    assert len({(f.table_name, f.sha256) for f in records}) == len(records), "a load doubled"
    stored: dict[tuple[str, str], int] = {}
    for (table,) in _warehouse(
        settings,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'",
    ):
        for sha, rows in _warehouse(
            settings, f"SELECT _file_sha256, count(*) FROM raw.{table} GROUP BY 1"
        ):
            stored[(f"raw.{table}", str(sha))] = int(rows)
    assert stored == loads

    published = {
        str(s) for (s,) in _warehouse(settings, "SELECT snapshot_id FROM governance.snapshots")
    }
    assert published == {s.snapshot_id for s in ledger.snapshots(limit=1000)}
    in_warehouse = {
        str(b) for (b,) in _warehouse(settings, "SELECT batch_id FROM governance.published_batches")
    }
    assert in_warehouse == {b.batch_id for b in ledger.batches(limit=1000, state="published")}
    purged = {b.batch_id for b in ledger.batches(limit=1000, state="purged")}
    logged = {
        str(b) for (b,) in _warehouse(settings, "SELECT batch_id FROM governance.purged_batches")
    }
    assert logged == purged
    for batch_id in purged:
        assert not _warehouse(
            settings, "SELECT 1 FROM governance.batch_files WHERE batch_id = ?", [batch_id]
        )

    def purge_key(table: str, cutoff: Any) -> tuple[str, str]:
        return table, cutoff.astimezone(UTC).isoformat(timespec="milliseconds")

    retention = Counter(
        purge_key(t, c)
        for t, c in _warehouse(settings, f"SELECT table_name, cutoff FROM {RETENTION_LOG}")
    )
    assert retention == Counter(
        purge_key(p.table_name, p.cutoff) for p in ledger.retention_purges()
    )

    history = ledger.alias_history()
    assert [m.version for m in history] == list(range(1, len(history) + 1))
    pairs = [(m.model_artifact_id, m.index_artifact_id) for m in history]
    assert all(a != b for a, b in itertools.pairwise(pairs)), "an alias move doubled"
    for run in ledger.recent_runs(limit=100):
        decisions = [
            (d.decision, d.decided_by, d.model_sha256, d.index_sha256)
            for d in ledger.approvals(run.run_id)
        ]
        assert all(a != b for a, b in itertools.pairwise(decisions)), run.run_id


# --------------------------------------------------------------------------------------
# The matrix
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A failpoint's case: what to prepare in the copy, the step to crash and to rerun,
    and the champion expected after the rerun (``None``: unchanged)."""

    act: Callable[[Home], list[str]]
    rerun: Callable[[Home], list[str]] | None = None
    prepare: Callable[[Settings, Ledger], None] | None = None
    champion: str | None = None


def _land(home: Home) -> list[str]:
    return [sys.executable, STEPS, "land", FAULT_REFRESH, str(home.source / "d")]


def _land_again(home: Home) -> list[str]:
    return [sys.executable, STEPS, "land", RERUN_REFRESH, str(home.source / "d")]


def _steps(*args: str) -> Callable[[Home], list[str]]:
    return lambda home: [sys.executable, STEPS, *args]


def _cli(*args: str) -> Callable[[Home], list[str]]:
    return lambda home: [CLI, *args]


def _purge(home: Home) -> list[str]:
    ledger = open_ledger(load_settings().ledger_url)
    try:
        (batch,) = ledger.batches(state="blocked")
    finally:
        ledger.dispose()
    return [CLI, "batches", "purge", batch.batch_id, "--by", "alice", "--reason", "bad feed"]


def _registered(settings: Settings, ledger: Ledger) -> None:
    _register(settings, ledger, NEW)


def _approved(settings: Settings, ledger: Ledger) -> None:
    _register(settings, ledger, NEW)
    _approve(settings, ledger, NEW)


CASES: dict[str, Case] = {
    "ingest.warehouse_committed": Case(_land, _land_again),
    "ingest.file_recorded": Case(_land, _land_again),
    "retention.warehouse_committed": Case(_land, _land_again),
    "land.warehouse_committed": Case(_land, _land_again),
    # After the crash the next run starts (a retry of the same task would heal it too).
    "publish.warehouse_committed": Case(_steps("publish", CANDIDATE), _steps("start", NEXT)),
    "publish.snapshot_recorded": Case(_steps("publish", CANDIDATE), _steps("start", NEXT)),
    "artifact.copying": Case(_steps("register", NEW)),
    "model.stored": Case(_steps("register", NEW)),
    "index.stored": Case(_steps("register", NEW)),
    "approval.signed": Case(_cli("approve", NEW, "--by", "bob"), prepare=_registered),
    "approval.recorded": Case(_cli("approve", NEW, "--by", "bob"), prepare=_registered),
    "promote.alias_moved": Case(_steps("promote", NEW), prepare=_approved, champion=NEW),
    "rollback.signed": Case(_cli("rollback", "--to", "1", "--by", "alice"), champion=V1),
    "rollback.alias_moved": Case(_cli("rollback", "--to", "1", "--by", "alice"), champion=V1),
    "purge.warehouse_committed": Case(_purge),
    "purge.files_forgotten": Case(_purge),
}


def test_every_failpoint_has_a_case() -> None:
    assert sorted(CASES) == sorted(POINTS)


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("point", sorted(CASES))
def test_a_crash_at_the_point_is_repaired_by_the_rerun(
    point: str,
    base: Home,
    tmp_path: Path,
    use: Callable[[Home], tuple[Settings, Ledger]],
) -> None:
    case = CASES[point]
    home = Home(tmp_path / "home")
    shutil.copytree(base.root, home.root, symlinks=True)
    settings, ledger = use(home)
    if case.prepare:
        case.prepare(settings, ledger)
    champion = _pair(ledger)
    ledger.dispose()

    crashed = _run(case.act(home), {**home.env, FAILPOINTS_ENV: point})
    assert crashed.returncode == -signal.SIGKILL, (
        f"{point} did not fire: exit {crashed.returncode}\n{crashed.stdout}\n{crashed.stderr}"
    )
    assert _pair(ledger) in {
        champion,
        _run_pair(ledger, case.champion) if case.champion else champion,
    }

    rerun = _run((case.rerun or case.act)(home), home.env)
    assert rerun.returncode == 0, f"rerun after {point}: {rerun.stdout}\n{rerun.stderr}"
    check_invariants(settings, ledger)
    assert _pair(ledger) == (_run_pair(ledger, case.champion) if case.champion else champion)
    if point.startswith(("model.", "index.", "artifact.")):
        assert _run_pair(ledger, NEW)  # both registered, stored by content
    if point.startswith("publish."):
        (current,) = _warehouse(
            settings,
            "SELECT snapshot_id FROM governance.snapshots ORDER BY published_at DESC LIMIT 1",
        )
        run = ledger.get_run(CANDIDATE)
        assert run is not None
        assert ledger.get_batch(str(run.lineage["batch_id"])).state == "published"  # type: ignore[union-attr]
        assert current[0] == publication.snapshot_id_for(publication.snapshot_schema(CANDIDATE))
    if point.startswith("purge."):
        (batch,) = ledger.batches(state="purged")
        assert "rows deleted" in (batch.events[-1].reason or "")
    if point.startswith(("ingest.", "land.", "retention.")):
        run = ledger.get_run(RERUN_REFRESH)
        assert run is not None
        batch = ledger.get_batch(str(run.lineage["batch_id"]))
        assert batch is not None and batch.state == "landed"
    ledger.dispose()
