"""Where Airflow points at the evidence: run notes, task extra links, the approval body.

A run's outcome is decided in the ledger; Airflow only sees a failed or successful
run. So that a BLOCKED run is told apart from a crash at a glance, each finished run
of a shelfguard DAG gets a note naming its outcome and linking its page in the
governance console, and the gate tasks and ``finalize`` carry an extra link to it.

Kept cheap to import (the plugin loads it in every Airflow process): the ledger and
the settings are only imported when a link or a note is asked for.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.listeners import hookimpl
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk.types import TaskInstanceKey

    from shelfguard.ledger import Ledger, RunRecord

log = logging.getLogger(__name__)

#: Where the Airflow plugin mounts the governance console on the api-server.
URL_PREFIX = "/shelfguard"
#: The tasks whose extra link leads to the run's evidence: the gates and ``finalize``.
EVIDENCE_TASKS = frozenset({"ingest", "finalize"})
# Airflow keeps at most 1,000 characters of a note.
_NOTE_LIMIT = 1000


def airflow_base_url() -> str:
    """Airflow's ``[api] base_url`` without its trailing slash ("" when not set)."""
    from airflow.configuration import conf

    return str(conf.get("api", "base_url", fallback="") or "").rstrip("/")


def run_page_url(run_id: str, base_url: str | None = None) -> str:
    """The console's page of the ledger run ``run_id`` (``<dag_id>/<airflow run id>``).

    Absolute when Airflow's ``[api] base_url`` is set, else a path from the server's root.
    """
    base = airflow_base_url() if base_url is None else base_url.rstrip("/")
    return f"{base}{URL_PREFIX}/runs/{quote(run_id, safe='/')}"


def run_note(run: RunRecord, url: str) -> str:
    """The Markdown note a finished run gets in Airflow: its outcome first, then the link."""
    outcome = run.outcome
    if outcome == "BLOCKED":
        headline = f"**BLOCKED** at the {run.blocked_gate or '?'} gate"
    elif outcome == "FAILED":
        headline = "**FAILED**: a task failed; no gate blocked the run"
    else:
        headline = f"**{outcome}**"
    lines = [headline]
    if run.message and outcome != "OK":
        lines.append(run.message.strip().splitlines()[0][:300])
    lines.append(f"[Governance evidence]({url})")
    return "\n\n".join(lines)


def _ledger() -> Ledger:
    from shelfguard.config import load_settings
    from shelfguard.ledger import open_ledger

    return open_ledger(load_settings().ledger_url)


def _finished_run(dag_id: str, airflow_run_id: str) -> RunRecord | None:
    """The ledger's record of this Airflow run, or None for a run shelfguard does not know."""
    from shelfguard.lineage import ledger_run_id

    ledger = _ledger()
    try:
        return ledger.get_run(ledger_run_id(dag_id, airflow_run_id))
    finally:
        ledger.dispose()


class EvidenceLink(BaseOperatorLink):
    """ "Governance evidence" on a shelfguard run's gate tasks and ``finalize``."""

    name = "Governance evidence"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        """The run's console page, or "" (no link) for other tasks and other DAGs' runs."""
        task_id = str(ti_key.task_id)
        if not (task_id.endswith("_gate") or task_id in EVIDENCE_TASKS):
            return ""
        try:
            run = _finished_run(ti_key.dag_id, ti_key.run_id)
        except Exception:  # a link must never break the page that lists it
            log.exception("no evidence link for %s", ti_key)
            return ""
        return "" if run is None else run_page_url(run.run_id)


def note_finished_run(dag_run: Any) -> str | None:
    """Set the note of a finished shelfguard run from its outcome in the ledger.

    Written in the session Airflow is deciding the run's state in (the run's own, else
    the thread's scoped session), flushed but not committed: the note lands in the same
    transaction as the run's state. A second connection would wait on the run's row that
    transaction holds, and committing the scoped session would close the scheduler's.
    A note a person wrote is left as it is. Returns the note set.
    """
    from airflow import settings
    from airflow.models.dagrun import DagRunNote
    from sqlalchemy.orm import object_session

    run = _finished_run(str(dag_run.dag_id), str(dag_run.run_id))
    if run is None or run.outcome == "RUNNING":
        return None
    text = run_note(run, run_page_url(run.run_id))[:_NOTE_LIMIT]
    session = object_session(dag_run)
    if session is None:
        scoped = settings.Session
        assert scoped is not None, "Airflow's ORM is not configured in this process"
        session = scoped()
    note = session.get(DagRunNote, dag_run.id)
    if note is None:
        note = DagRunNote(content=text)  # type: ignore[no-untyped-call]
        note.dag_run_id = dag_run.id
        session.add(note)
    elif note.user_id is None:
        note.content = text
    else:
        return None
    session.flush()
    return text


class RunNotes:
    """Airflow listener: each finished shelfguard run gets its outcome as a note.

    The listener runs where Airflow decides the run's state (the scheduler, or the
    embedded runner's process); ``finalize`` has recorded the outcome by then.
    """

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        """A run Airflow calls successful: OK or PROMOTED in the ledger."""
        self._note(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        """A run Airflow calls failed: BLOCKED, REJECTED or FAILED in the ledger."""
        self._note(dag_run)

    @staticmethod
    def _note(dag_run: Any) -> None:
        try:
            note_finished_run(dag_run)
        except Exception:  # a note must never stop Airflow recording the run's state
            log.exception("could not note the outcome of %s", dag_run)


__all__ = [
    "EVIDENCE_TASKS",
    "URL_PREFIX",
    "EvidenceLink",
    "RunNotes",
    "note_finished_run",
    "run_note",
    "run_page_url",
]
