"""The run context: the policy pinned at start, and who triggered the run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from shelfguard.config import load_settings, project_root
from shelfguard.ledger import open_ledger
from shelfguard.run_context import (
    EMBEDDED_TRIGGER_ENV,
    RunContext,
    RunContextError,
    pin_policy,
    trigger_identity,
)


def test_the_pinned_policy_survives_an_edit_of_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_file = tmp_path / "governance.yml"
    policy_file.write_bytes((project_root() / "governance.yml").read_bytes())
    monkeypatch.setenv("SHELFGUARD_POLICY", str(policy_file))
    monkeypatch.setenv("SHELFGUARD_HOME", str(tmp_path / "home"))
    settings = load_settings()
    settings.ensure_dirs()
    ledger = open_ledger(settings.ledger_url)
    pinned = pin_policy(ledger, settings.home)
    ledger.start_run("r/1", "catalog_refresh", lineage={"policy_sha256": pinned.sha256})

    edited = yaml.safe_load(policy_file.read_text())
    edited["privacy"]["k_anonymity"] = 50
    policy_file.write_text(yaml.safe_dump(edited))

    ctx = RunContext.for_run("r/1", settings=settings, ledger=ledger)
    assert ctx.policy.sha256 == pinned.sha256
    assert ctx.policy.privacy.k_anonymity == 5
    assert ctx.run_dir.name == "r_1"

    ledger.start_run("r/2", "catalog_refresh", lineage={})
    with pytest.raises(RunContextError, match="pinned no policy"):
        RunContext.for_run("r/2", settings=settings, ledger=ledger)
    ledger.start_run("r/3", "catalog_refresh", lineage={"policy_sha256": "0" * 64})
    with pytest.raises(RunContextError, match="is not in the ledger"):
        RunContext.for_run("r/3", settings=settings, ledger=ledger)


def _context(conf: dict[str, str], **dag_run: object) -> dict[str, object]:
    return {"dag_run": SimpleNamespace(conf=conf, **dag_run)}


def test_the_trigger_is_never_taken_from_the_conf() -> None:
    forged = {"triggered_by": "someone-else"}
    # Airflow's authenticated user (UI, REST API) wins.
    assert (
        trigger_identity(_context(forged, triggering_user_name="carol", run_type="manual"), {})
        == "carol"
    )
    # Runs the scheduler started are the scheduler's.
    for kind in ("scheduled", "asset_triggered", "backfill"):
        context = _context(forged, triggering_user_name=None, run_type=kind)
        assert trigger_identity(context, {}) == "scheduler"
    # The embedded runner hands over the local user through the environment, not the conf
    # (`airflow dags test` names every run's user "dag_test").
    embedded = _context(forged, triggering_user_name="dag_test", run_type="manual")
    assert trigger_identity(embedded, {EMBEDDED_TRIGGER_ENV: "dave"}) == "dave"
    unnamed = _context(forged, triggering_user_name=None, run_type="manual")
    assert trigger_identity(unnamed, {}) == "unknown"
