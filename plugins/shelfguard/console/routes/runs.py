"""Runs: the list of both DAGs' runs, one run's evidence, and its Data Docs pages."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlsplit

from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, HTMLResponse

from shelfguard.console.actions import waiting_pair
from shelfguard.console.auth import Reader, may_read_dag
from shelfguard.console.deps import LedgerDep, readable_dags, render
from shelfguard.console.views import OUTCOME_CHOICES, known_dags, run_rows

router = APIRouter(tags=["runs"])
_DOCS_CSP = "default-src 'self' 'unsafe-inline' data: https:; frame-ancestors 'self'"


def docs_key(run_id: str) -> str:
    """A run id as one URL path segment (run ids hold ``/``)."""
    return base64.urlsafe_b64encode(run_id.encode()).decode().rstrip("=")


def _run_of_key(key: str) -> str:
    try:
        return base64.urlsafe_b64decode(key + "=" * (-len(key) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run") from exc


@router.get("/", response_class=HTMLResponse)
@router.get("/runs", response_class=HTMLResponse)
def runs_page(
    request: Request,
    identity: Reader,
    ledger: LedgerDep,
    outcome: Annotated[str | None, Query()] = None,
    dag: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    """Both DAGs' runs, newest first, filtered by outcome and DAG."""
    outcome = outcome if outcome in OUTCOME_CHOICES else None
    readable = readable_dags(identity, ledger)
    rows = run_rows(ledger, readable_dags=readable, outcome=outcome, dag_id=dag or None)
    return render(
        request,
        identity,
        "runs.html",
        rows=rows,
        outcomes=OUTCOME_CHOICES,
        dags=[d for d in known_dags(ledger) if d in readable],
        outcome=outcome,
        dag=dag,
    )


@router.get("/runs/{run_id:path}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, identity: Reader, ledger: LedgerDep) -> HTMLResponse:
    """One run: the verdict first, then failed checks with their evidence."""
    from shelfguard.reports import ReportError, build_report

    run = ledger.get_run(run_id)
    if run is None or not may_read_dag(identity, run.dag_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no run {run_id} in the ledger")
    try:
        report = build_report(ledger, run_id)
    except ReportError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    docs = {
        g["gate"]: f"datadocs/{docs_key(run_id)}/{g['gate']}/index.html"
        for g in report["gates"]
        if _docs_file(g.get("report_uri")) is not None
    }
    return render(
        request,
        identity,
        "run.html",
        r=report,
        docs=docs,
        waiting=waiting_pair(ledger, run) is not None,
    )


def _docs_file(uri: object) -> Path | None:
    """The local Data Docs page a gate's ``report_uri`` names (``file://…/index.html``)."""
    if not isinstance(uri, str) or not uri.startswith("file://"):
        return None
    path = Path(unquote(urlsplit(uri).path))
    return path if path.suffix == ".html" else None


@router.get("/datadocs/{key}/{gate}/{page:path}")
def data_docs(key: str, gate: str, page: str, identity: Reader, ledger: LedgerDep) -> FileResponse:
    """A file of the Data Docs site a gate of the run recorded (only inside that site)."""
    run_id = _run_of_key(key)
    run = ledger.get_run(run_id)
    if run is None or not may_read_dag(identity, run.dag_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such run")
    index = next(
        (
            found
            for g in ledger.gate_results(run_id)
            if g.gate == gate and (found := _docs_file(g.report_uri)) is not None
        ),
        None,
    )
    if index is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"gate {gate} recorded no Data Docs")
    site = index.parent.resolve()
    target = (site / (page or index.name)).resolve()
    if not target.is_relative_to(site) or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such Data Docs page")
    # GX renders these pages with its own inline scripts and styles.
    return FileResponse(target, headers={"Content-Security-Policy": _DOCS_CSP})
