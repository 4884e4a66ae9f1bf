"""The HITL approval operator turns Airflow's answer (or its timeout) into a ledger decision."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException
from signing_support import approvers, signer

from shelfguard.airflow.operators import hitl_operator
from shelfguard.config import load_settings, project_root
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.policy_approval import approve
from shelfguard.run_context import pin_policy

DAG_ID = "search_model_retraining"
AIRFLOW_RUN = "manual__1"
RUN_ID = f"{DAG_ID}/{AIRFLOW_RUN}"


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    policy = yaml.safe_load((project_root() / "governance.yml").read_text())
    # bob answers in Airflow (its auth manager verifies him); the owner signs the policy.
    owner = approvers("governance-owner")
    policy["approval"].update(mode="required", approvers=[*owner, "bob"], timeout_minutes=5)
    (tmp_path / "governance.yml").write_text(yaml.safe_dump(policy))
    monkeypatch.setenv("SHELFGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHELFGUARD_POLICY", str(tmp_path / "governance.yml"))
    settings = load_settings()
    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    # As the run's start task does: the policy is pinned, and the operator reads it back.
    approve(ledger, tmp_path / "governance.yml", signer("governance-owner"))
    pinned = pin_policy(ledger, settings.home)
    ledger.start_run(RUN_ID, DAG_ID, triggered_by="carol", lineage={"policy_sha256": pinned.sha256})
    ledger.update_lineage(RUN_ID, model_sha256="m1", index_sha256="i1")
    return ledger


def answer(chosen: str | None, user: str | None) -> dict[str, Any]:
    if chosen is None:
        return {"error": "timed out", "error_type": "timeout"}
    return {
        "chosen_options": [chosen],
        "params_input": {},
        "responded_at": datetime.now(UTC),
        "responded_by_user": {"id": user, "name": user} if user else None,
    }


def complete(event: dict[str, Any]) -> Any:
    operator = hitl_operator("approval")
    context = {"dag": SimpleNamespace(dag_id=DAG_ID), "run_id": AIRFLOW_RUN}
    return operator.execute_complete(context, event)  # type: ignore[attr-defined]


def test_the_operator_fails_closed_at_the_timeout() -> None:
    operator = hitl_operator("approval")
    assert operator.defaults == ["Reject"]  # type: ignore[attr-defined]
    assert operator.options == ["Approve", "Reject"]  # type: ignore[attr-defined]


def test_an_approver_approves(ledger: Ledger) -> None:
    result = complete(answer("Approve", "bob"))
    assert result["decision"] == "approved"
    (decision,) = ledger.approvals(RUN_ID)
    assert (decision.decided_by, decision.via, decision.model_sha256) == ("bob", "hitl", "m1")


@pytest.mark.parametrize(
    ("event", "who", "via"),
    [
        (answer("Reject", "bob"), "bob", "hitl"),
        (answer(None, None), "shelfguard:timeout", "timeout"),
        (answer("Approve", "carol"), "carol", "hitl"),  # triggered the run: refused
        (answer("Approve", "mallory"), "mallory", "hitl"),  # not an approver: refused
    ],
)
def test_everything_else_is_a_recorded_rejection(
    ledger: Ledger, event: dict[str, Any], who: str, via: str
) -> None:
    with pytest.raises(AirflowFailException, match="REJECTED"):
        complete(event)
    (decision,) = ledger.approvals(RUN_ID)
    assert (decision.decision, decision.decided_by, decision.via) == ("rejected", who, via)


def test_the_embedded_runner_refuses_the_hitl_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shelfguard.cli import main

    monkeypatch.setenv("SHELFGUARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHELFGUARD_APPROVAL_BACKEND", "hitl")
    assert main(["run", "search_model_retraining", "--json"]) == 2
    assert "needs a running Airflow" in capsys.readouterr().err.replace("\n", " ")


def test_the_request_links_the_run_page_and_a_report_written_before_it_waits(
    ledger: Ledger,
) -> None:
    operator = hitl_operator("approval")
    context = {"dag": SimpleNamespace(dag_id=DAG_ID), "run_id": AIRFLOW_RUN}
    # Without a task instance Airflow cannot store the request; the body is set before that.
    with pytest.raises(KeyError, match="task_instance"):
        operator.execute(context)
    body = str(operator.body)  # type: ignore[attr-defined]
    page = "/shelfguard/runs/search_model_retraining/manual__1"
    assert f"]({page})" in body, body
    (report,) = [line.split(": ", 1)[1] for line in body.splitlines() if "report:" in line]
    assert Path(report.removeprefix("file://")).is_file(), report
