"""search_model_retraining end to end with the real bundled model (slow, runs in CI).

catalog_refresh builds and gates the marts; retraining re-gates them, trains
the real all-MiniLM-L6-v2 through the local backend (the pod's entry point),
evaluates on the golden set against the base model and BM25, and the
evaluation gate blesses or blocks the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from shelfguard.generator import generate

pytestmark = [pytest.mark.airflow, pytest.mark.slow]
CLI = str(Path(sys.executable).with_name("shelfguard"))


def shelfguard(home: Path, *args: str, policy: Path | None = None) -> tuple[int, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env["SHELFGUARD_HOME"] = str(home)
    if policy is not None:
        env["SHELFGUARD_POLICY"] = str(policy)
    result = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=1500)
    assert result.stdout.strip(), f"no output; stderr:\n{result.stderr[-3000:]}"
    return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retraining")
    data = generate(root / "data", products=600, seed=5)
    home = root / "home"
    code, outcome = shelfguard(
        home, "run", "catalog_refresh", "--source", str(data.out_dir), "--json"
    )
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    return home


def evaluation_checks(home: Path, run_id: str) -> dict[str, str]:
    _, report = shelfguard(home, "report", run_id, "--json")
    (gate,) = [g for g in report["gates"] if g["gate"] == "evaluation"]
    return {c["name"]: c["status"] for c in gate["checks"]}


def test_first_model_is_blessed_only_by_beating_base_and_bm25(home: Path) -> None:
    code, outcome = shelfguard(home, "run", "search_model_retraining", "--json")
    assert (code, outcome["outcome"]) == (0, "OK"), outcome
    assert {"name": "evaluation", "status": "pass"} in outcome["gates"]
    checks = evaluation_checks(home, outcome["run_id"])
    assert checks["beats_base:ndcg@10"] == checks["beats_bm25:ndcg@10"] == "pass"

    _, status = shelfguard(home, "status", "--json")
    metrics = next(r for r in status["runs"] if r["run_id"] == outcome["run_id"])["metrics"]
    assert set(metrics) == {"challenger", "base", "bm25"}
    assert metrics["challenger"]["ndcg@10"] >= metrics["base"]["ndcg@10"] + 0.05, metrics
    assert metrics["challenger"]["ndcg@10"] > metrics["bm25"]["ndcg@10"]
    print({name: round(m["ndcg@10"], 4) for name, m in metrics.items()})

    _, report = shelfguard(home, "report", outcome["run_id"], "--json")
    lineage = report["lineage"]
    for key in (
        "policy_sha256",
        "code_version",
        "data_snapshot_id",
        "model_sha256",
        "base_model_sha256",
    ):
        assert lineage.get(key), f"lineage lacks {key}"
    html = Path(str(Path(outcome["report"]))).read_text(encoding="utf-8")
    assert "Model evaluation on the golden set" in html


def test_unreachable_floor_blocks_at_the_evaluation_gate(home: Path, tmp_path: Path) -> None:
    from shelfguard.config import project_root

    policy = tmp_path / "governance.yml"
    text = (project_root() / "governance.yml").read_text()
    policy.write_text(text.replace("    ndcg@10: 0.30", "    ndcg@10: 0.99"))
    code, outcome = shelfguard(home, "run", "search_model_retraining", "--json", policy=policy)
    assert code == 3, outcome
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", "evaluation")
    assert "floor:ndcg@10" in outcome["message"]
    assert evaluation_checks(home, outcome["run_id"])["floor:ndcg@10"] == "fail"


def test_a_model_trained_on_shuffled_pairs_is_blocked(home: Path) -> None:
    conf = json.dumps({"train": {"shuffle_pairs": True}})
    code, outcome = shelfguard(home, "run", "search_model_retraining", "--conf", conf, "--json")
    assert code == 3, outcome
    assert (outcome["outcome"], outcome["blocked_gate"]) == ("BLOCKED", "evaluation")
    assert evaluation_checks(home, outcome["run_id"])["beats_base:ndcg@10"] == "fail"
