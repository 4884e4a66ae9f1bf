"""Write-audit-publish end to end (invariant 9), through the CLI with real Airflow, dbt and GX.

One home lives through a story, built once for the module:

1. week 1 lands clean and is published;
2. a batch blocked at the raw-data gate carries a distinctive query typed by twelve
   users in its search log (more than k);
3. week 2 lands clean and is published: the query must be nowhere downstream;
4. a batch blocked at the training-data gate (category drift): the published marts
   must be exactly as they were;
5. a retraining run starts and passes its training-data gate on the published snapshot;
6. week 3 is published while that run is between its gate and its export, and
   ``governance.yml`` is edited in the middle of that refresh run;
7. the retraining run exports its training data.

The retraining run's steps are the task bodies of the DAG, each run in a process of its
own (as Airflow runs a task), so that the catalog_refresh run of step 6 can happen
between two of them.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import pyarrow.parquet as pq
import pytest
import yaml
from signing_support import approvers, write_keys

from shelfguard.config import project_root
from shelfguard.data.generator import generate

# The story's fixture runs six catalog_refresh runs and a retraining run's steps: about
# 6 minutes on an idle two-core machine, three times that beside the other CI worker.
pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(2700)]
CLI = str(Path(sys.executable).with_name("shelfguard"))
PRODUCTS = 400
SECRET = "zebra velvet ottoman qx"
SECRET_USERS = 12
WEEK3_QUERY = "week three brass floor lamp"
RETRAIN_DAG = "search_model_retraining"
RETRAIN_RUN = "manual__interleaved"

# The retraining task bodies, run as Airflow would run them: one process per task.
_TASK = """
import json, sys
from types import SimpleNamespace
from shelfguard import gates
from shelfguard.airflow import tasks

class TI:
    def xcom_push(self, key, value): pass
    def xcom_pull(self, task_ids=None, key=None): return None

step = sys.argv[1]
context = {"dag": SimpleNamespace(dag_id=%(dag)r), "run_id": %(run)r, "ti": TI(), "params": {}}
if step == "start":
    print(json.dumps({"run_id": tasks.start_run(context)}))
elif step == "gate":
    outcome = gates.run_gate("training_data", %(dag)r + "/" + %(run)r)
    print(json.dumps({"status": outcome.status, "subject": outcome.subject,
                      "checks": {c["name"]: c["status"] for c in outcome.checks}}))
elif step == "export":
    print(json.dumps(tasks.prepare_training(context)))
""" % {"dag": RETRAIN_DAG, "run": RETRAIN_RUN}  # noqa: UP031 (the code is full of braces)


def _env(home: Path, policy: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env.update(
        SHELFGUARD_HOME=str(home),
        SHELFGUARD_POLICY=str(policy),
        SHELFGUARD_KEYS_DIR=str(home.parent / "keys"),
    )
    return env


def shelfguard(home: Path, policy: Path, *args: str) -> tuple[int, Any]:
    result = subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=_env(home, policy), timeout=900
    )
    assert result.stdout.strip(), f"no output; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


def retrain_step(home: Path, policy: Path, step: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", _TASK, step],
        capture_output=True,
        text=True,
        env=_env(home, policy),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def warehouse(home: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql).fetchall()


def published_marts(home: Path) -> dict[str, tuple[int, str]]:
    """Every published mart: its row count and a hash of its content (row order ignored)."""
    names = [
        row[0]
        for row in warehouse(
            home,
            "select table_name from information_schema.tables "
            "where table_schema = 'marts' order by 1",
        )
    ]
    found = {}
    for name in names:
        ((rows, content),) = warehouse(
            home,
            "select count(*), md5(coalesce(string_agg(h, '' order by h), '')) "
            f"from (select md5(cast(t as varchar)) as h from marts.{name} as t)",
        )
        found[name] = (int(rows), str(content))
    return found


def snapshot_schemas(home: Path) -> set[str]:
    rows = warehouse(
        home,
        "select schema_name from information_schema.schemata where schema_name like 'snapshot_%'",
    )
    return {str(row[0]) for row in rows}


def add_searches(search_log: Path, query: str, users: int, tag: str) -> None:
    """``users`` users each search for ``query`` once and click a product."""
    lines = search_log.read_text(encoding="utf-8").splitlines()
    product_id = lines[1].split("\t")[6]
    extra = [
        f"{tag}-{n}\t{tag}-session-{n}\t{tag}-user-{n}\t{tag}{n}@example.com\t"
        f"2026-10-20T10:{n:02d}:00Z\t{query}\t{product_id}\t1\t1\t0\t0"
        for n in range(users)
    ]
    search_log.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")


def _running_refresh_pinned(home: Path, after: str) -> str | None:
    """The policy sha256 a catalog_refresh run started after ``after`` pinned, once it has."""
    ledger = home / "ledger.sqlite"
    if not ledger.exists():
        return None
    with sqlite3.connect(ledger, timeout=30) as db:
        rows = db.execute(
            "select lineage from runs where dag_id = 'catalog_refresh' and started_at > ? "
            "order by started_at desc",
            [after],
        ).fetchall()
    for (lineage,) in rows:
        sha = json.loads(lineage).get("policy_sha256")
        if sha:
            return str(sha)
    return None


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("wap")
    home = root / "home"
    policy = root / "governance.yml"
    policy.write_bytes((project_root() / "governance.yml").read_bytes())
    facts: dict[str, Any] = {"home": home, "policy": policy}

    def refresh(name: str, seed: int, *defects: str) -> tuple[int, dict[str, Any]]:
        data = generate(root / name, products=PRODUCTS, seed=seed, defects=list(defects))
        if name == "blocked":
            add_searches(data.files["search_log"], SECRET, SECRET_USERS, "secret")
        # A name typed into the conf must not become the run's trigger (invariant 10).
        forged = json.dumps({"triggered_by": "mallory"})
        code, outcome = shelfguard(
            home,
            policy,
            "run",
            "catalog_refresh",
            "--source",
            str(data.out_dir),
            "--conf",
            forged,
            "--json",
        )
        facts[name] = outcome
        return code, outcome

    # 1-3: a clean week, a batch blocked at the raw-data gate, another clean week.
    assert refresh("week1", 21)[0] == 0, facts["week1"]
    assert refresh("blocked", 22, "duplicate_ids")[0] == 3, facts["blocked"]
    facts["secret_in_raw"] = warehouse(
        home, f"select count(*) from raw.search_log where query = '{SECRET}'"
    )[0][0]
    assert refresh("week2", 23)[0] == 0, facts["week2"]

    # 4: a batch blocked at the training-data gate must leave the published marts as they were.
    facts["marts_before_block"] = published_marts(home)
    facts["schemas_before_block"] = snapshot_schemas(home)
    assert refresh("shifted", 24, "category_shift")[0] == 3, facts["shifted"]
    facts["marts_after_block"] = published_marts(home)
    facts["schemas_after_block"] = snapshot_schemas(home)

    # 5: a retraining run pins the published snapshot and passes its training-data gate.
    facts["retrain_start"] = retrain_step(home, policy, "start")
    facts["retrain_gate"] = retrain_step(home, policy, "gate")

    # 6: week 3 is published meanwhile; governance.yml is edited once that run started.
    original = policy.read_bytes()
    facts["policy_sha256"] = hashlib.sha256(original).hexdigest()
    # Week 3: the same catalog as week 2 (no drift), and eight shoppers typing a new query.
    week3 = generate(root / "week3", products=PRODUCTS, seed=23)
    add_searches(week3.files["search_log"], WEEK3_QUERY, 8, "week3")
    with sqlite3.connect(home / "ledger.sqlite") as db:
        (after,) = db.execute("select max(started_at) from runs").fetchone()
    process = subprocess.Popen(
        [CLI, "run", "catalog_refresh", "--source", str(week3.out_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home, policy),
    )
    deadline = time.monotonic() + 600
    pinned = None
    while pinned is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        pinned = _running_refresh_pinned(home, str(after))
    assert pinned == facts["policy_sha256"], "the run pinned the policy as it was at start"
    # A k no query can reach: a run reading the edited file would publish no training pair
    # and block at the training-data gate.
    edited = yaml.safe_load(original)
    edited["privacy"]["k_anonymity"] = 100_000
    policy.write_text(yaml.safe_dump(edited), encoding="utf-8")
    facts["edited_sha256"] = hashlib.sha256(policy.read_bytes()).hexdigest()
    # Two DAGs on one home at once: the retraining run reads its pinned snapshot from the
    # DuckDB file while catalog_refresh writes and publishes week 3 into it.
    facts["concurrent_exports"] = []
    while process.poll() is None and len(facts["concurrent_exports"]) < 3:
        facts["concurrent_exports"].append(retrain_step(home, policy, "export"))
    stdout, stderr = process.communicate(timeout=900)
    assert stdout.strip(), stderr[-3000:]
    facts["week3"] = json.loads(stdout)
    facts["week3_code"] = process.returncode
    policy.write_bytes(original)

    # 7: the retraining run exports what its gate passed, after week 3 was published.
    facts["retrain_export"] = retrain_step(home, policy, "export")
    facts["marts_after_week3"] = published_marts(home)
    return facts


def test_a_batch_blocked_at_the_raw_gate_is_never_read_downstream(story: dict[str, Any]) -> None:
    home, policy = story["home"], story["policy"]
    assert story["blocked"]["blocked_gate"] == "raw_data"
    assert story["secret_in_raw"] == SECRET_USERS, "the blocked batch stays in raw.* as evidence"
    for mart in ("agg_query_popularity", "fct_training_pairs"):
        assert warehouse(home, f"select count(*) from marts.{mart} where query = '{SECRET}'") == [
            (0,)
        ], mart
    for schema in snapshot_schemas(home):
        assert warehouse(
            home, f"select count(*) from {schema}.agg_query_popularity where query = '{SECRET}'"
        ) == [(0,)], schema
    pairs = pq.read_table(Path(story["retrain_export"]["data_dir"]) / "pairs.parquet")
    assert SECRET not in set(pairs.column("query").to_pylist()), "never in a training export"
    code, report = shelfguard(home, policy, "report", story["week2"]["run_id"], "--json")
    assert code == 0 and SECRET not in json.dumps(report)


def test_batches_lists_the_blocked_batch_as_blocked_and_the_clean_ones_as_published(
    story: dict[str, Any],
) -> None:
    home, policy = story["home"], story["policy"]
    code, batches = shelfguard(home, policy, "batches", "--json")
    assert code == 0
    states = {b["run_id"]: (b["state"], b["gate"]) for b in batches}
    assert states[story["week1"]["run_id"]] == ("published", None)
    assert states[story["week2"]["run_id"]] == ("published", None)
    assert states[story["week3"]["run_id"]] == ("published", None)
    assert states[story["blocked"]["run_id"]] == ("blocked", "raw_data")
    assert states[story["shifted"]["run_id"]] == ("blocked", "training_data")
    (blocked,) = [b for b in batches if b["run_id"] == story["blocked"]["run_id"]]
    assert [h["state"] for h in blocked["history"]] == ["landed", "blocked"]
    assert blocked["rows_read"] == blocked["rows_accepted"] + blocked["rows_quarantined"] > 0


def test_a_run_blocked_at_the_training_data_gate_leaves_the_published_marts_as_they_were(
    story: dict[str, Any],
) -> None:
    assert story["shifted"]["blocked_gate"] == "training_data"
    before, after = story["marts_before_block"], story["marts_after_block"]
    assert set(before) == {
        "agg_category_mix",
        "agg_query_popularity",
        "dim_products",
        "fct_golden_judgements",
        "fct_training_pairs",
    }
    assert after == before, "same row counts and same content in every published mart"
    assert story["schemas_after_block"] == story["schemas_before_block"], (
        "the blocked run's candidate schema is dropped"
    )


def test_asset_events_are_emitted_only_at_publication_and_name_the_snapshot(
    story: dict[str, Any],
) -> None:
    home = story["home"]
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        events = db.execute(
            "select asset.name, asset_event.extra from asset_event "
            "join asset on asset.id = asset_event.asset_id"
        ).fetchall()
    # Three published runs (weeks 1 to 3), three marts Assets each; nothing from Cosmos.
    assert len(events) == 9, [name for name, _ in events]
    assert {name for name, _ in events} == {
        "shelfguard.marts.dim_products",
        "shelfguard.marts.fct_training_pairs",
        "shelfguard.marts.fct_golden_judgements",
    }
    with sqlite3.connect(home / "ledger.sqlite") as db:
        snapshots = dict(db.execute("select snapshot_id, fingerprint from snapshots").fetchall())
    assert len(snapshots) == 3
    for _, extra in events:
        named = json.loads(extra)
        assert snapshots[named["snapshot_id"]] == named["fingerprint"]


def test_each_finished_run_gets_its_outcome_as_a_note_in_airflow(story: dict[str, Any]) -> None:
    with sqlite3.connect(story["home"] / "airflow" / "airflow.db") as db:
        notes = dict(
            db.execute(
                "select dag_run.run_id, dag_run_note.content from dag_run_note "
                "join dag_run on dag_run.id = dag_run_note.dag_run_id"
            ).fetchall()
        )
    expected = {
        "week1": "**OK**",
        "blocked": "**BLOCKED** at the raw_data gate",
        "shifted": "**BLOCKED** at the training_data gate",
    }
    for name, headline in expected.items():
        run_id = story[name]["run_id"]
        airflow_run = run_id.split("/", 1)[1]
        note = notes[airflow_run]
        assert note.splitlines()[0] == headline, note
        page = "/shelfguard/runs/" + quote(run_id, safe="/")
        assert note.endswith(f"[Governance evidence]({page})"), note


def test_retraining_trains_on_exactly_the_snapshot_it_pinned(story: dict[str, Any]) -> None:
    home = story["home"]
    with sqlite3.connect(home / "ledger.sqlite") as db:
        (lineage,) = db.execute(
            "select lineage from runs where run_id = ?", [f"{RETRAIN_DAG}/{RETRAIN_RUN}"]
        ).fetchone()
        published = db.execute(
            "select snapshot_id, schema_name, fingerprint, run_id from snapshots "
            "order by published_at"
        ).fetchall()
    pinned = json.loads(lineage)
    week2, week3 = published[1], published[2]
    assert week2[3] == story["week2"]["run_id"] and week3[3] == story["week3"]["run_id"]
    assert (pinned["snapshot_id"], pinned["snapshot_fingerprint"]) == (week2[0], week2[2])
    gate = story["retrain_gate"]
    assert gate["status"] == "pass" and gate["subject"] == f"data:{week2[2]}"
    assert gate["checks"]["training_data.snapshot_unchanged"] == "pass"

    # The export ran after week 3 was published, and holds week 2's snapshot, row for row.
    data_dir = Path(story["retrain_export"]["data_dir"])
    assert data_dir.name == week2[2]
    exported = pq.read_table(data_dir / "pairs.parquet")
    (count,) = warehouse(home, f"select count(*) from {week2[1]}.fct_training_pairs")[0]
    assert exported.num_rows == count
    week2_queries = {
        row[0]
        for row in warehouse(home, f"select distinct query from {week2[1]}.fct_training_pairs")
    }
    live_queries = {
        row[0] for row in warehouse(home, "select distinct query from marts.fct_training_pairs")
    }
    assert set(exported.column("query").to_pylist()) == week2_queries
    assert WEEK3_QUERY in live_queries, "the published marts moved on to week 3 meanwhile"
    assert WEEK3_QUERY not in week2_queries


def test_two_dags_on_one_home_wait_for_each_other_and_read_their_own_snapshot(
    story: dict[str, Any],
) -> None:
    # The exports ran while week 3 was being written and published (each waited for the
    # file when the other DAG held it): every one holds the pinned snapshot, row for row.
    assert story["week3_code"] == 0, story["week3"]
    assert story["concurrent_exports"], "week 3 finished before any export could run"
    for export in story["concurrent_exports"]:
        assert export == story["retrain_export"]
    with sqlite3.connect(story["home"] / "ledger.sqlite") as db:
        (lineage,) = db.execute(
            "select lineage from runs where run_id = ?", [f"{RETRAIN_DAG}/{RETRAIN_RUN}"]
        ).fetchone()
    schema = json.loads(lineage)["marts_schema"]
    data_dir = Path(story["retrain_export"]["data_dir"])
    assert (
        pq.read_table(data_dir / "pairs.parquet").num_rows
        == warehouse(story["home"], f"select count(*) from {schema}.fct_training_pairs")[0][0]
    )


def test_a_policy_edited_mid_run_does_not_change_that_run(story: dict[str, Any]) -> None:
    home, policy = story["home"], story["policy"]
    assert story["edited_sha256"] != story["policy_sha256"]
    assert (story["week3_code"], story["week3"]["outcome"]) == (0, "OK"), story["week3"]
    code, report = shelfguard(home, policy, "report", story["week3"]["run_id"], "--json")
    assert code == 0
    assert report["policy"]["sha256"] == story["policy_sha256"]
    assert report["lineage"]["policy_sha256"] == story["policy_sha256"]
    assert yaml.safe_load(report["policy"]["content"])["privacy"]["k_anonymity"] == 5
    # The marts it published were built with the pinned k: queries of 5+ users are there.
    assert warehouse(home, "select min(n_users) from marts.agg_query_popularity") >= [(5,)]
    with sqlite3.connect(home / "ledger.sqlite") as db:
        pinned = {row[0] for row in db.execute("select sha256 from policies")}
    assert story["edited_sha256"] not in pinned, "no task of the run read the edited file"


def test_the_trigger_comes_from_the_runner_not_from_the_conf(story: dict[str, Any]) -> None:
    with sqlite3.connect(story["home"] / "ledger.sqlite") as db:
        triggers = {
            row[0]
            for row in db.execute("select triggered_by from runs where dag_id = 'catalog_refresh'")
        }
    assert "mallory" not in triggers
    assert triggers == {getpass.getuser()}


def test_a_blocked_batch_can_be_purged_and_the_purge_is_recorded(story: dict[str, Any]) -> None:
    # Last in the module: it deletes the blocked batch's rows.
    home, policy = story["home"], story["policy"]
    # Purging is a signed decision of an approver of the policy in force: the data
    # protection officer is listed with their key, and signs that policy into force.
    write_keys(home.parent / "keys", "dpo", "mallory")
    keyed = yaml.safe_load(policy.read_text())
    keyed["approval"]["approvers"] = approvers("governance-owner", "dpo")
    policy = home.parent / "governance-keyed.yml"
    policy.write_text(yaml.safe_dump(keyed), encoding="utf-8")
    code, in_force = shelfguard(
        home, policy, "policy", "approve", str(policy), "--by", "dpo", "--json"
    )
    assert code == 0 and in_force["approved_by"] == "dpo", in_force
    stranger = subprocess.run(
        [CLI, "batches", "purge", "batch-x", "--by", "mallory", "--reason", "r"],
        capture_output=True,
        text=True,
        env=_env(home, policy),
        timeout=120,
    )
    assert stranger.returncode == 2 and "mallory is not an approver" in stranger.stderr
    _, batches = shelfguard(home, policy, "batches", "--json")
    by_run = {b["run_id"]: b for b in batches}
    blocked, published = by_run[story["blocked"]["run_id"]], by_run[story["week1"]["run_id"]]
    refused = subprocess.run(
        [CLI, "batches", "purge", published["batch_id"], "--by", "dpo", "--reason", "test"],
        capture_output=True,
        text=True,
        env=_env(home, policy),
        timeout=120,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join((refused.stdout + refused.stderr).split())
    assert "only a blocked batch can be purged" in said
    assert "Traceback" not in said

    code, purged = shelfguard(
        home,
        policy,
        "batches",
        "purge",
        blocked["batch_id"],
        "--by",
        "dpo",
        "--reason",
        "personal data of a blocked batch",
        "--json",
    )
    assert code == 0 and purged["state"] == "purged"
    assert (purged["history"][-1]["state"], purged["history"][-1]["by"]) == ("purged", "dpo")
    assert "personal data of a blocked batch" in purged["reason"]
    assert sum(f["raw_rows"] for f in purged["purged_files"]) == blocked["rows_accepted"]
    assert warehouse(home, f"select count(*) from raw.search_log where query = '{SECRET}'") == [
        (0,)
    ]
    # The published data is untouched, and the signed purge verifies.
    assert published_marts(home) == story["marts_after_week3"]
    verified = subprocess.run(
        [CLI, "verify"], capture_output=True, text=True, env=_env(home, policy)
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
