"""search_model_retraining end to end on the embedded runtime (slow, runs in CI).

One home for the module: catalog_refresh builds and gates the marts once. The
first retraining fine-tunes the real bundled model, which must beat the base
model and BM25, embeds the catalog, passes the index gate, is approved by
policy and promoted with its index. The real model is then the champion every
later run is judged against. The runs that exercise approval, rejection,
timeouts, rollback and a tampered gate use a tiny random BERT as the base
model (the same code path, seconds instead of minutes) under a test policy
whose model thresholds are open, so that what they check is the governance.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import yaml
from notify_support import Inbox, receivers
from serving_support import free_port
from signing_support import approvers, write_keys
from tiny_model_support import tiny_model as build_tiny_model

from shelfguard.config import load_settings, project_root
from shelfguard.data.generator import generate
from shelfguard.ledger import open_ledger

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
CLI = str(Path(sys.executable).with_name("shelfguard"))
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
QUERY = "solid wood coffee table"


#: Signs every test policy into force; the other people sign their own decisions.
OWNER = "governance-owner"
PEOPLE = (OWNER, "alice", "bob", "carol")
#: The Airflow connection of the test SMTP server, passed to every run (see ``inbox``).
_NOTIFY_ENV: dict[str, str] = {}


def _env(home: Path, policy: Path | None = None, user: str = "carol") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    # Everyone's personal keys sit beside the home (each person would have their own).
    env.update(SHELFGUARD_HOME=str(home), USER=user, SHELFGUARD_KEYS_DIR=str(home.parent / "keys"))
    if policy is not None:
        env["SHELFGUARD_POLICY"] = str(policy)
    env.update(_NOTIFY_ENV)
    return env


def cli(home: Path, *args: str, policy: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, env=_env(home, policy), timeout=1500
    )


def shelfguard(home: Path, *args: str, policy: Path | None = None) -> tuple[int, dict[str, Any]]:
    result = cli(home, *args, policy=policy)
    assert result.stdout.strip(), f"no output; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


def put_in_force(home: Path, policy: Path) -> Path:
    """The governance owner signs ``policy`` into force (runs refuse any other)."""
    approved = cli(home, "policy", "approve", str(policy), "--by", OWNER)
    assert approved.returncode == 0, approved.stderr
    return policy


def retrain(home: Path, policy: Path | None = None, **train: object) -> tuple[int, dict[str, Any]]:
    if policy is not None:
        put_in_force(home, policy)
    args = ["run", "search_model_retraining", "--json"]
    if train:
        args += ["--conf", json.dumps({"train": train})]
    return shelfguard(home, *args, policy=policy)


def write_policy(
    path: Path,
    evaluation: dict[str, Any] | None = None,
    notify: list[dict[str, Any]] | None = None,
    **approval: object,
) -> Path:
    """The project's policy with the model thresholds opened (then ``evaluation`` applied),
    the approval block updated and ``notify`` channels listed."""
    policy = yaml.safe_load((project_root() / "governance.yml").read_text())
    policy["notify"] = {"channels": notify or []}
    policy["evaluation"].update(
        floors={}, max_drop_vs_champion=1.0, max_slice_drop=1.0, first_run_must_beat=[]
    )
    policy["evaluation"].update(evaluation or {})
    policy["index"]["min_canary_hit_rate"] = 0.0
    policy["approval"].update(approval)
    names = dict.fromkeys([OWNER, *policy["approval"].get("approvers", [])])
    policy["approval"]["approvers"] = approvers(*names)
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


def keyed_default(path: Path) -> Path:
    """The project's own policy, with the governance owner's key listed."""
    policy = yaml.safe_load((project_root() / "governance.yml").read_text())
    policy["approval"]["approvers"] = approvers(OWNER)
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


def champion(home: Path) -> dict[str, Any]:
    _, status = shelfguard(home, "status", "--json")
    return status["champion"]


def hits(home: Path) -> list[int]:
    code, found = shelfguard(home, "search", QUERY, "-k", "10", "--json")
    assert code == 0, found
    return [h["product_id"] for h in found["hits"]]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retraining")
    data = generate(root / "data", products=600, seed=5)
    home = root / "home"
    write_keys(root / "keys", *PEOPLE)
    code, outcome = shelfguard(
        home, "run", "catalog_refresh", "--source", str(data.out_dir), "--json"
    )
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    return {"root": root, "home": home, "data": data.out_dir}


@pytest.fixture(scope="module")
def tiny_model(store: dict[str, Path]) -> str:
    """A tiny random BERT (built by the training tests' helper) to train from in seconds."""
    return build_tiny_model(store["data"], store["root"])


@pytest.fixture(scope="module")
def first(store: dict[str, Path]) -> dict[str, Any]:
    """The first real model: blessed only by beating base and BM25, then promoted."""
    code, outcome = retrain(store["home"])
    assert (code, outcome["outcome"]) == (0, "PROMOTED"), outcome
    return outcome


def gate_checks(home: Path, run_id: str, gate: str) -> dict[str, str]:
    _, report = shelfguard(home, "report", run_id, "--json")
    (found,) = [g for g in report["gates"] if g["gate"] == gate]
    return {c["name"]: c["status"] for c in found["checks"]}


def test_first_model_is_blessed_and_promoted_with_its_index(
    store: dict[str, Path], first: dict[str, Any]
) -> None:
    home = store["home"]
    gates = {g["name"]: g["status"] for g in first["gates"]}
    assert gates == {"training_data": "pass", "evaluation": "pass", "index": "pass"}, gates
    checks = gate_checks(home, first["run_id"], "evaluation")
    assert checks["beats_base:ndcg@10"] == checks["beats_bm25:ndcg@10"] == "pass"
    index_checks = gate_checks(home, first["run_id"], "index")
    assert set(index_checks.values()) == {"pass"}
    # The policy encodes in int8: the index serves the encoder the evaluation judged.
    assert {"index.encoder", "index.encoder_evaluated"} <= set(index_checks)

    _, status = shelfguard(home, "status", "--json")
    run = next(r for r in status["runs"] if r["run_id"] == first["run_id"])
    metrics = run["metrics"]
    assert set(metrics) == {"challenger", "base", "bm25"}
    assert metrics["challenger"]["ndcg@10"] >= metrics["base"]["ndcg@10"] + 0.05, metrics
    assert metrics["challenger"]["ndcg@10"] > metrics["bm25"]["ndcg@10"]
    print({name: round(m["ndcg@10"], 4) for name, m in metrics.items()})

    _, report = shelfguard(home, "report", first["run_id"], "--json")
    lineage = report["lineage"]
    for key in ("policy_sha256", "code_version", "data_snapshot_id", "base_model_sha256"):
        assert lineage.get(key), f"lineage lacks {key}"
    assert status["champion"]["model"]["sha256"] == lineage["model_sha256"]
    assert status["champion"]["index"]["sha256"] == lineage["index_sha256"]
    assert status["champion"]["run_id"] == first["run_id"]
    served = Path(status["champion"]["index"]["uri"])
    manifest = json.loads((served / "manifest.json").read_text(encoding="utf-8"))
    assert (manifest["precision"], manifest["encoder"]["backend"]) == ("int8", "openvino")
    assert (served / "encoder" / "int8.json").is_file()
    (approval,) = report["approvals"]
    assert (approval["decision"], approval["via"]) == ("approved", "policy")
    html = Path(first["report"]).read_text(encoding="utf-8")
    assert "Model evaluation on the golden set" in html
    assert "Approval and promotion" in html


def test_the_first_run_s_lineage_chains_ingest_marts_model_and_index(
    store: dict[str, Path], first: dict[str, Any]
) -> None:
    """The embedded file transport received this run's events (docs/lineage.md)."""
    events = [
        json.loads(path.read_text(encoding="utf-8"))
        for path in sorted((store["home"] / "lineage").glob("events*.json"))
    ]
    _, report = shelfguard(store["home"], "report", first["run_id"], "--json")
    model, index = report["lineage"]["model_sha256"], report["lineage"]["index_sha256"]

    def ids(datasets: list[dict[str, Any]]) -> set[tuple[str, str]]:
        return {(d["namespace"], d["name"]) for d in datasets}

    # shelfguard's own events (the provider's task and DAG events share the job names).
    named = {
        e["job"]["name"]: e
        for e in events
        if e["eventType"] == "COMPLETE" and "/plugins/shelfguard" in e["producer"]
    }
    train = named["search_model_retraining.train"]
    embed = named["search_model_retraining.embed_catalog"]
    publish = named["catalog_refresh"]
    assert ids(train["outputs"]) == {("shelfguard://models", model)}
    assert ids(embed["outputs"]) == {("shelfguard://indexes", index)}
    assert ("shelfguard://models", model) in ids(embed["inputs"])
    # The marts it trained on are the ones catalog_refresh published, from the landed files.
    assert ids(train["inputs"]) and ids(train["inputs"]) <= ids(publish["outputs"])
    assert {d["name"].rsplit("/", 1)[-1] for d in publish["inputs"]} >= {"product.csv"}
    gates = {
        a["name"]
        for e in (publish, train, embed)
        for d in e["inputs"] + e["outputs"]
        for a in d.get("facets", {}).get("dataQualityAssertions", {}).get("assertions", [])
    }
    assert gates >= {"raw_data", "training_data", "evaluation"}, gates


def test_search_answers_from_the_champion_and_refuses_bad_input(
    store: dict[str, Path], first: dict[str, Any]
) -> None:
    home = store["home"]
    code, found = shelfguard(home, "search", QUERY, "-k", "5", "--json")
    assert code == 0
    assert len(found["hits"]) == 5
    assert found["champion"]["index_sha256"] == champion(home)["index"]["sha256"]
    assert all(h["product_name"] for h in found["hits"])
    empty = cli(home, "search", "  ")
    assert empty.returncode == 2
    assert "empty query" in empty.stderr and "Traceback" not in empty.stderr
    fresh = cli(store["root"] / "no-such-home", "search", QUERY)
    assert fresh.returncode == 2
    assert "no champion yet" in fresh.stderr and "Traceback" not in fresh.stderr


def test_the_search_service_answers_from_the_champion_and_its_log_lands(
    store: dict[str, Path], first: dict[str, Any]
) -> None:
    """shelfguard serve on the real champion: it answers like `search`; what it served and
    the clicks on it land through catalog_refresh as a batch of behaviour, gated."""
    import httpx

    home = store["home"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = store["root"] / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [CLI, "serve", "--port", str(port), "--rotate-seconds", "3600"],
            env=_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        answer = httpx.get(f"{url}/search", params={"q": QUERY, "k": 10}, timeout=60).json()
        assert [h["product_id"] for h in answer["hits"]] == hits(home)
        assert answer["index_sha256"] == champion(home)["index"]["sha256"]
        served = []
        for n, query in enumerate(["oak desk", "velvet sofa", "bar stool", QUERY] * 3):
            body = httpx.get(
                f"{url}/search",
                params={"q": query, "k": 8, "session": f"s{n}", "user": f"shopper-{n % 4}"},
                timeout=60,
            ).json()
            served.append(body)
            clicked = httpx.post(
                f"{url}/click",
                json={
                    "search_id": body["search_id"],
                    "product_id": body["hits"][0]["product_id"],
                    "position": 1,
                    "added_to_cart": n % 3 == 0,
                },
                timeout=60,
            )
            assert clicked.status_code == 202, clicked.text
    finally:
        proc.send_signal(signal.SIGTERM)  # shutting down writes out what it served
        proc.wait(timeout=120)
    parts = sorted((home / "landing" / "served").glob("served-*"))
    assert len(parts) == 1, log_path.read_text()[-3000:]
    code, outcome = shelfguard(home, "run", "catalog_refresh", "--source", str(parts[0]), "--json")
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    gates = {g["name"]: g["status"] for g in outcome["gates"]}
    assert gates["raw_data"] in ("pass", "warn") and gates["training_data"] in ("pass", "warn")
    _, report = shelfguard(home, "report", outcome["run_id"], "--json")
    (ingest,) = [g for g in report["gates"] if g["gate"] == "ingest"]
    (landed,) = ingest["metrics"]["files"]
    assert (landed["file_name"], landed["rows_read"], landed["rows_quarantined"]) == (
        "search_log.csv",
        8 * len(served) + 10,
        0,
    )
    checks = gate_checks(home, outcome["run_id"], "raw_data")
    assert checks["raw_search_log.search_position_unique"] == "pass", checks


def test_a_model_trained_on_shuffled_pairs_loses_to_the_champion(
    store: dict[str, Path], first: dict[str, Any]
) -> None:
    home = store["home"]
    before = champion(home)
    # One pair per query: a few steps of random pairs already make a model worse than the
    # fine-tuned champion (the whole run's fine-tune took minutes for nothing more).
    code, outcome = retrain(home, shuffle_pairs=True, max_pairs_per_query=1)
    assert code == 3, outcome
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", "evaluation")
    assert gate_checks(home, outcome["run_id"], "evaluation")["vs_champion:ndcg@10"] == "fail"
    assert champion(home) == before


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    """A loopback SMTP server and webhook receiver that the test policies notify."""
    with receivers() as received:
        _NOTIFY_ENV.update(received.env())
        yield received
    _NOTIFY_ENV.clear()


@pytest.fixture(scope="module")
def slice_blocked(
    store: dict[str, Path],
    first: dict[str, Any],
    tiny_model: str,
    tmp_path_factory: pytest.TempPathFactory,
    inbox: Inbox,
) -> tuple[dict[str, Any], Path, dict[str, Any]]:
    """A run blocked by the slice rule alone: overall rules open, per-class rule in force.

    The tiny model is far behind the real champion on every class with enough golden
    queries. Returns the outcome, the policy used and the champion before the run.
    """
    home = store["home"]
    before = champion(home)
    policy = write_policy(
        tmp_path_factory.mktemp("slice") / "governance.yml",
        {"max_slice_drop": 0.05, "slice_min_queries": 3},
        notify=inbox.channels(events=["blocked"]),
    )
    code, outcome = retrain(home, policy, base_model=tiny_model)
    assert (code, outcome["blocked_gate"]) == (3, "evaluation"), outcome
    return outcome, policy, before


def test_a_blocked_run_is_mailed_and_posted_to_the_policy_channels(
    slice_blocked: tuple[dict[str, Any], Path, dict[str, Any]], inbox: Inbox
) -> None:
    outcome, _, _ = slice_blocked
    mail, post = inbox.wait_for("blocked")
    assert post["run_id"] == outcome["run_id"]
    assert "Gate: evaluation" in post["lines"]
    assert any(line.startswith("Failed check: slice:") for line in post["lines"]), post
    assert str(post["link"]).endswith("report.html")
    assert Path(str(post["link"]).removeprefix("file://")).is_file()
    assert f"BLOCKED: {outcome['run_id']} at gate evaluation" in str(mail["Subject"])


def test_a_slice_regression_blocks_naming_the_slice(
    store: dict[str, Path], slice_blocked: tuple[dict[str, Any], Path, dict[str, Any]]
) -> None:
    home = store["home"]
    outcome, _, before = slice_blocked
    checks = gate_checks(home, outcome["run_id"], "evaluation")
    regressed = [name for name, status in checks.items() if status == "fail"]
    assert regressed and all(name.startswith("slice:") for name in regressed), checks
    assert checks["vs_champion:ndcg@10"] == "pass"
    assert regressed[0] in outcome["message"]
    assert champion(home) == before


def test_a_failed_gate_marked_success_in_airflow_does_not_promote(
    store: dict[str, Path], slice_blocked: tuple[dict[str, Any], Path, dict[str, Any]]
) -> None:
    home = store["home"]
    outcome, policy, before = slice_blocked

    # An operator "fixes" the run in Airflow: the failed gate becomes a success.
    settings = load_settings({"SHELFGUARD_HOME": str(home)})
    dag_id, airflow_run_id = outcome["run_id"].split("/", 1)
    with sqlite3.connect(settings.airflow_home / "airflow.db") as db:
        changed = db.execute(
            "update task_instance set state = 'success' "
            "where dag_id = ? and run_id = ? and task_id = 'evaluation_gate'",
            (dag_id, airflow_run_id),
        ).rowcount
    assert changed == 1
    from shelfguard.airflow.embedded import airflow_env

    env = airflow_env(settings, _env(home, policy))
    promote = subprocess.run(
        [AIRFLOW, "tasks", "test", dag_id, "promote", airflow_run_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    # `airflow tasks test` exits 0 either way; the task's own state says it failed.
    assert "new_state=failed" in promote.stdout, promote.stdout[-2000:]
    assert "refused" in promote.stdout
    ledger = open_ledger(settings.ledger_url)
    run = ledger.get_run(outcome["run_id"])
    assert run is not None
    refused = run.lineage["promotion_refused"]
    assert any(m.startswith("gate evaluation") for m in refused), refused
    assert champion(home) == before


def run_in_background(home: Path, policy: Path, tiny_model: str) -> subprocess.Popen[str]:
    put_in_force(home, policy)
    conf = json.dumps({"train": {"base_model": tiny_model}})
    return subprocess.Popen(
        [CLI, "run", "search_model_retraining", "--json", "--conf", conf],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home, policy, user="carol"),
    )


def wait_for_approval_request(home: Path, proc: subprocess.Popen[str]) -> str:
    """The ledger run id once the run has a model and an index waiting for a decision."""
    ledger = open_ledger(load_settings({"SHELFGUARD_HOME": str(home)}).ledger_url)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for run in ledger.recent_runs(limit=3, dag_id="search_model_retraining"):
            index_passed = any(
                g.gate == "index" and g.status == "pass" for g in ledger.gate_results(run.run_id)
            )
            if run.outcome == "RUNNING" and index_passed:
                return run.run_id
        time.sleep(2)
    raise AssertionError("the run never asked for approval")


def test_a_person_rejects_and_the_champion_stays(
    store: dict[str, Path], first: dict[str, Any], tiny_model: str, tmp_path: Path, inbox: Inbox
) -> None:
    home = store["home"]
    before = champion(home)
    policy = write_policy(
        tmp_path / "governance.yml",
        notify=inbox.channels(events=["approval_waiting", "rejected"]),
        mode="required",
        approvers=["alice", "bob", "carol"],
    )
    proc = run_in_background(home, policy, tiny_model)
    try:
        run_id = wait_for_approval_request(home, proc)
        # The approvers are told that a decision waits, and how to give it.
        _, waiting = inbox.wait_for("approval_waiting", timeout=120)
        assert waiting["run_id"] == run_id
        assert any("shelfguard approve|reject" in line for line in waiting["lines"])
        own = cli(home, "approve", run_id, "--by", "carol", policy=policy)
        assert own.returncode == 2 and "may not approve" in " ".join(own.stderr.split())
        no = cli(
            home, "reject", "latest", "--by", "bob", "--comment", "needs more data", policy=policy
        )
        assert no.returncode == 0, no.stderr
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    outcome = json.loads(stdout)
    assert (proc.returncode, outcome["outcome"]) == (4, "REJECTED"), stderr[-2000:]
    assert "bob" in outcome["message"]
    assert champion(home) == before
    mail, rejected = inbox.wait_for("rejected")
    assert rejected["run_id"] == run_id and "bob" in " ".join(rejected["lines"])
    assert f"REJECTED: {run_id}" in str(mail["Subject"])


def test_no_answer_before_the_timeout_is_a_rejection(
    store: dict[str, Path], first: dict[str, Any], tiny_model: str, tmp_path: Path
) -> None:
    home = store["home"]
    before = champion(home)
    policy = write_policy(
        tmp_path / "governance.yml", mode="required", approvers=["bob"], timeout_minutes=0.05
    )
    code, outcome = retrain(home, policy, base_model=tiny_model)
    assert (code, outcome["outcome"]) == (4, "REJECTED"), outcome
    _, report = shelfguard(home, "report", outcome["run_id"], "--json")
    assert [(a["decision"], a["via"]) for a in report["approvals"]] == [("rejected", "timeout")]
    assert champion(home) == before


def test_promotion_then_rollback_restores_the_pair_and_its_answers(
    store: dict[str, Path], first: dict[str, Any], tiny_model: str, tmp_path: Path
) -> None:
    home = store["home"]
    before, answers_before = champion(home), hits(home)
    policy = write_policy(tmp_path / "governance.yml")
    code, outcome = retrain(home, policy, base_model=tiny_model)
    assert (code, outcome["outcome"]) == (0, "PROMOTED"), outcome
    after = champion(home)
    assert after["version"] == before["version"] + 1
    assert after["model"]["sha256"] != before["model"]["sha256"]
    assert after["index"]["sha256"] != before["index"]["sha256"]
    assert hits(home) != answers_before

    # Only an approver of the policy in force (governance-owner) rolls back, with their key.
    refused = cli(home, "rollback", "--by", "bob", "--reason", "worse answers")
    assert refused.returncode == 2 and "bob is not an approver" in refused.stderr, refused
    assert champion(home) == after
    back = cli(home, "rollback", "--by", "governance-owner", "--reason", "worse answers")
    assert back.returncode == 0, back.stderr
    restored = champion(home)
    assert (restored["model"], restored["index"]) == (before["model"], before["index"])
    assert restored["version"] == after["version"] + 1
    assert hits(home) == answers_before


def test_catalog_refresh_reencodes_only_the_changed_products(
    store: dict[str, Path], first: dict[str, Any], tmp_path: Path
) -> None:
    home = store["home"]
    before = champion(home)
    # Earlier tests put keyed policies in force: the project's own one needs a signature too.
    policy = put_in_force(home, keyed_default(tmp_path / "governance.yml"))
    source = store["root"] / "changed"
    source.mkdir()
    for path in store["data"].iterdir():
        (source / path.name).write_bytes(path.read_bytes())
    # Products the change feed overrides keep the feed's text: leave those alone.
    feed = (source / "catalog_changes.csv").read_text(encoding="utf-8").splitlines()[1:]
    in_feed = {line.split("\t")[3] for line in feed}
    lines = (source / "product.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    candidates = [i for i in range(1, len(lines)) if lines[i].split("\t")[0] not in in_feed]
    edited_lines = candidates[:: len(candidates) // 6][:6]  # 1% of the 600 products
    for i in edited_lines:
        fields = lines[i].split("\t")
        fields[1] = fields[1] + " deluxe edition"
        lines[i] = "\t".join(fields)
    (source / "product.csv").write_text("".join(lines), encoding="utf-8")

    code, outcome = shelfguard(
        home, "run", "catalog_refresh", "--source", str(source), "--json", policy=policy
    )
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    assert "index refreshed" in outcome["message"]
    _, report = shelfguard(home, "report", outcome["run_id"], "--json")
    (gate,) = [g for g in report["gates"] if g["gate"] == "index"]
    counts = gate["metrics"]["counts"]
    print(counts)

    # What changed, measured independently: the champion index's products against the
    # catalog this run exported. (A new full product file also supersedes older entries
    # of the change feed, so a few more products than the 6 edited ones move.)
    settings = load_settings({"SHELFGUARD_HOME": str(home)})
    export = Path(settings.artifact_root) / "datasets" / report["lineage"]["data_snapshot_id"]
    old = Path(before["index"]["uri"]) / "products.parquet"
    new = export / "products.parquet"
    con = duckdb.connect()
    changed_or_new, dropped = con.execute(
        f"""
        select
            count(*) filter (where o.product_id is null or o.content_hash <> n.content_hash),
            (select count(*) from '{old}' where product_id not in (select product_id from '{new}'))
        from '{new}' n left join '{old}' o using (product_id)
        """
    ).fetchone()
    edited = [int(lines[i].split("\t")[0]) for i in edited_lines]
    reencoded = {
        row[0]
        for row in con.execute(
            f"select n.product_id from '{new}' n left join '{old}' o using (product_id) "
            "where o.product_id is null or o.content_hash <> n.content_hash"
        ).fetchall()
    }
    assert set(edited) <= reencoded
    assert (counts["encoded"], counts["dropped"]) == (changed_or_new, dropped), counts
    assert counts["encoded"] <= 0.05 * counts["products"], counts
    assert counts["reused"] + counts["encoded"] == counts["products"]
    after = champion(home)
    assert after["model"] == before["model"]
    assert after["index"]["sha256"] == gate["subject"].removeprefix("index:")


def _canary_round(
    home: Path, policy: Path, train: dict[str, Any], sessions: int, log_path: Path
) -> tuple[int, dict[str, Any], dict[str, float]]:
    """A retraining run under ``policy`` while ``shelfguard serve`` follows the home and
    ``sessions`` simulated shoppers of the store shop once its canary started: the run's
    exit code and outcome, and each served index's true nDCG@10 on the hidden truth."""
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        service = subprocess.Popen(
            [
                *(CLI, "serve", "--port", str(port), "--poll-seconds", "0.5"),
                *("--rotate-seconds", "2", "--click-window", "1", "--no-access-log"),
            ],
            env=_env(home, policy),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    run = subprocess.Popen(
        [CLI, "run", "search_model_retraining", "--json", "--conf", json.dumps({"train": train})],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_env(home, policy), "SHELFGUARD_ONLINE_POLL_SECONDS": "2"},
    )
    try:
        # The run's pair becomes the canary once every offline gate passed and it was
        # approved by policy; the service picks it up.
        deadline = time.monotonic() + 900
        while True:
            assert run.poll() is None, run.communicate()
            assert service.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, "the canary never started"
            try:
                ready = httpx.get(f"{url}/readyz", timeout=5).json()
            except httpx.HTTPError:
                ready = {}
            if ready.get("canary"):
                break
            time.sleep(1)
        assert ready["canary"]["share"] == 0.5
        shoppers = subprocess.run(
            [
                *(CLI, "simulate", "--sessions", str(sessions), "--url", url),
                *("--products", "600", "--seed", "5", "--json"),
            ],
            capture_output=True,
            text=True,
            env=_env(home, policy),
            timeout=1800,
        )
        assert shoppers.returncode == 0, shoppers.stderr
        by_index = json.loads(shoppers.stdout)["by_index"]
        stdout, stderr = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=120)
    assert stdout.strip(), stderr[-3000:]
    return run.returncode, json.loads(stdout), {k: v["true_ndcg@10"] for k, v in by_index.items()}


def test_the_online_gate_blocks_a_worse_challenger_and_passes_a_good_one(
    store: dict[str, Path], first: dict[str, Any], tmp_path: Path
) -> None:
    """Offline champion rule opened, a canary required. A model trained on shuffled pairs
    passes every offline gate, meets simulated shoppers on half of the sessions while the
    run waits in the triggerer, and the online gate alone blocks it. A model fine-tuned
    from the champion passes the online gate and is promoted."""
    home = store["home"]
    before = champion(home)
    policy = write_policy(tmp_path / "governance.yml")
    doc = yaml.safe_load(policy.read_text())
    doc["canary"] = {
        "required": True,
        "share": 0.5,
        "min_impressions": 6000,
        "metric": "debiased_ctr",
        # About 600 searches per pair: the bootstrap's 95% bound is about 0.04 wide.
        "max_drop": 0.1,
        "confidence": 0.95,
        "max_wait_minutes": 30,
    }
    policy.write_text(yaml.safe_dump(doc), encoding="utf-8")
    put_in_force(home, policy)

    # 1. Trained on shuffled pairs: blocked at online, by the online gate alone.
    shuffled = {"shuffle_pairs": True, "max_pairs_per_query": 1}
    code, outcome, true_ndcg = _canary_round(home, policy, shuffled, 1000, tmp_path / "a.log")
    assert (code, outcome["outcome"], outcome["blocked_gate"]) == (3, "BLOCKED", "online"), outcome
    assert champion(home) == before
    checks = gate_checks(home, outcome["run_id"], "online")
    assert checks == {"online.impressions": "pass", "online.debiased_ctr": "fail"}, checks
    offline = {g: s for g, s in gate_checks(home, outcome["run_id"], "evaluation").items()}
    assert "fail" not in offline.values(), offline
    # The online metric and the truth agree: the champion's pair was the better one.
    own = before["index"]["sha256"]
    assert true_ndcg[own] > max(v for k, v in true_ndcg.items() if k != own), true_ndcg
    ledger = open_ledger(load_settings({"SHELFGUARD_HOME": str(home)}).ledger_url)
    try:
        moves = [(m.action, m.moved_by) for m in ledger.alias_history("canary")]
        ended = ledger.get_alias("canary")
    finally:
        ledger.dispose()
    assert moves[-2:] == [("canary_start", "policy"), ("canary_end", "policy")], moves
    assert ended is not None and ended.index.sha256 == own

    # 2. What the service logged lands as a batch (its largest delivery: the service
    # rotated every 2 s here), then week 2 of the store (the champion's index is
    # refreshed with it). A model fine-tuned a little further from the champion on the
    # published data is as good online: promoted.
    deliveries = (home / "landing" / "served").glob("served-*")
    served = max(deliveries, key=lambda d: (d / "search_log.csv").stat().st_size)
    week2 = generate(store["root"] / "week-2", products=600, seed=5, week=2).out_dir
    for source in (served, week2):
        code, landed = shelfguard(
            home, "run", "catalog_refresh", "--source", str(source), "--json", policy=policy
        )
        assert (code, landed["outcome"]) == (0, "OK"), landed
    before = champion(home)
    further = {"base_model": before["model"]["uri"], "learning_rate": 1e-6}
    further["max_pairs_per_query"] = 1
    code, outcome, true_ndcg = _canary_round(home, policy, further, 1000, tmp_path / "b.log")
    assert (code, outcome["outcome"]) == (0, "PROMOTED"), outcome
    assert gate_checks(home, outcome["run_id"], "online") == {
        "online.impressions": "pass",
        "online.debiased_ctr": "pass",
    }
    now = champion(home)
    assert (now["run_id"], now["version"]) == (outcome["run_id"], before["version"] + 1)
    print(f"online rounds: true nDCG@10 by index {true_ndcg}")
    put_in_force(home, write_policy(tmp_path / "after.yml"))  # later runs need no canary
