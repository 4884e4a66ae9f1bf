"""Airflow points at the evidence: run notes, extra links (shelfguard.airflow.evidence_links)."""

from __future__ import annotations

import importlib.util

from airflow.models.taskinstancekey import TaskInstanceKey

from shelfguard.airflow.evidence_links import EvidenceLink, RunNotes, run_note, run_page_url
from shelfguard.config import Settings, project_root
from shelfguard.ledger import open_ledger

DAG_ID = "catalog_refresh"
AIRFLOW_RUN = "manual__2026-03-02T09:00:00+00:00"
RUN_ID = f"{DAG_ID}/{AIRFLOW_RUN}"
PAGE = "/shelfguard/runs/catalog_refresh/manual__2026-03-02T09%3A00%3A00%2B00%3A00"


def _key(task_id: str, dag_id: str = DAG_ID, run_id: str = AIRFLOW_RUN) -> TaskInstanceKey:
    return TaskInstanceKey(dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=1)


def test_the_run_page_is_the_consoles_under_airflows_base_url() -> None:
    assert run_page_url(RUN_ID, base_url="") == PAGE
    assert run_page_url(RUN_ID, base_url="https://airflow.example/") == (
        "https://airflow.example" + PAGE
    )


def test_a_note_names_the_outcome_first_then_links_the_evidence(sg_home: Settings) -> None:
    ledger = open_ledger(sg_home.ledger_url)
    ledger.start_run(RUN_ID, DAG_ID, triggered_by="carol")
    run = ledger.finish_run(
        RUN_ID, "BLOCKED", blocked_gate="raw_data", message="raw_products.product_id_unique: 18"
    )
    note = run_note(run, PAGE)
    assert note.splitlines()[0] == "**BLOCKED** at the raw_data gate"
    assert "raw_products.product_id_unique: 18" in note
    assert note.endswith(f"[Governance evidence]({PAGE})")
    ledger.dispose()


def test_gate_tasks_and_finalize_of_a_known_run_link_its_page(sg_home: Settings) -> None:
    ledger = open_ledger(sg_home.ledger_url)
    ledger.start_run(RUN_ID, DAG_ID, triggered_by="carol")
    ledger.dispose()
    link = EvidenceLink()
    for task_id in ("raw_data_gate", "training_data_gate", "ingest", "finalize"):
        assert link.get_link(None, ti_key=_key(task_id)) == PAGE, task_id
    # Other tasks, and the tasks of runs shelfguard never recorded (other DAGs), get none.
    assert link.get_link(None, ti_key=_key("publish")) == ""
    assert link.get_link(None, ti_key=_key("raw_data_gate", dag_id="someone_elses_dag")) == ""


def test_the_plugin_registers_the_link_and_the_run_notes() -> None:
    path = project_root() / "plugins" / "shelfguard_plugin.py"
    spec = importlib.util.spec_from_file_location("shelfguard_plugin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plugin = module.ShelfguardPlugin
    assert [type(link) for link in plugin.global_operator_extra_links] == [EvidenceLink]
    assert [type(listener) for listener in plugin.listeners] == [RunNotes]
