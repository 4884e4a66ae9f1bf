"""The ledger commands run on a ledger alone: a decision taken all the way (a signed
approval of a waiting run), a refused rollback and purge, the policy, keys, the canary's
status and a dry-run gc import no Airflow module (issue 19: an approver's laptop need not
have Airflow, and its start-up costs seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from signing_support import approvers, signer, write_keys

from shelfguard.config import Settings, project_root
from shelfguard.ledger import open_ledger
from shelfguard.policy_approval import approve
from shelfguard.run_context import pin_policy

# Each command in a fresh `main`, in one process; then the Airflow modules it holds.
PROBE = """\
import json, sys
from shelfguard.cli import main
codes = {}
for argv in json.loads(sys.argv[1]):
    try:
        codes[" ".join(argv)] = main(argv)
    except SystemExit as exc:
        codes[" ".join(argv)] = exc.code
airflow = sorted(m for m in sys.modules if m.split(".")[0] == "airflow")
print("RESULT " + json.dumps({"codes": codes, "airflow": airflow}))
"""

COMMANDS = [
    ["policy", "show", "--json"],
    ["approve", "latest", "--by", "bob", "--comment", "looks right"],
    ["rollback", "--by", "alice", "--reason", "probe"],
    ["batches", "purge", "batch-x", "--by", "alice", "--reason", "probe"],
    ["batches", "--json"],
    ["keys", "show", "alice"],
    ["canary", "status", "--json"],
    ["gc", "--dry-run", "--json"],
    ["history", "--json"],
    ["status", "--json"],
    ["verify", "--json"],
]


def _waiting_run(settings: Settings, policy_path: Path) -> str:
    """A policy in force (signed by alice) and a retraining run pinned to it, gated and
    waiting for a decision."""
    ledger = open_ledger(settings.ledger_url)
    try:
        approve(ledger, policy_path, signer("alice"))
        pinned = pin_policy(ledger, settings.home)
        run_id = "search_model_retraining/1"
        ledger.start_run(
            run_id,
            "search_model_retraining",
            triggered_by="carol",
            lineage={"policy_sha256": pinned.sha256},
        )
        ledger.record_artifact("model", "/m", "m1", produced_by_run=run_id)
        ledger.record_artifact(
            "index", "/i", "i1", produced_by_run=run_id, meta={"model_sha256": "m1"}
        )
        ledger.update_lineage(run_id, data_snapshot_id="s", model_sha256="m1", index_sha256="i1")
        for gate, subject in (
            ("training_data", "data:s"),
            ("evaluation", "model:m1"),
            ("index", "index:i1"),
        ):
            ledger.record_gate(run_id, gate, "pass", subject=subject)
    finally:
        ledger.dispose()
    return run_id


def test_the_ledger_commands_import_no_airflow_module(
    sg_home: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy = yaml.safe_load((project_root() / "governance.yml").read_text())
    policy["approval"] = {"mode": "required", "approvers": approvers("alice", "bob")}
    policy_path = tmp_path / "governance.yml"
    policy_path.write_text(yaml.safe_dump(policy, sort_keys=False))
    monkeypatch.setenv("SHELFGUARD_POLICY", str(policy_path))
    monkeypatch.setenv("SHELFGUARD_KEYS_DIR", str(write_keys(tmp_path / "keys", "alice", "bob")))
    run_id = _waiting_run(sg_home, policy_path)

    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(COMMANDS)],
        capture_output=True,
        text=True,
        env=os.environ,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["airflow"] == [], result["airflow"][:20]
    # The commands did their work, not only their parsing: the decision is in the ledger.
    codes = result["codes"]
    assert codes["approve latest --by bob --comment looks right"] == 0, done.stderr[-2000:]
    assert codes["policy show --json"] == codes["verify --json"] == 0
    ledger = open_ledger(sg_home.ledger_url)
    try:
        assert [a.decision for a in ledger.approvals(run_id)] == ["approved"]
    finally:
        ledger.dispose()
