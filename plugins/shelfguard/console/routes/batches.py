"""Batches: every landed batch, its write-audit-publish state and its quarantine."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from shelfguard.console.auth import Reader
from shelfguard.console.charts import bar_chart
from shelfguard.console.deps import LedgerDep, render
from shelfguard.console.views import batch_rows
from shelfguard.ledger import BATCH_STATES

router = APIRouter(tags=["batches"])


@router.get("/batches", response_class=HTMLResponse)
def batches_page(
    request: Request,
    identity: Reader,
    ledger: LedgerDep,
    state: Annotated[str | None, Query()] = None,
) -> HTMLResponse:
    """The newest batches with their states and quarantine counts by reason."""
    state = state if state in BATCH_STATES else None
    rows = batch_rows(ledger, state)
    states = Counter(row.batch.state for row in rows)
    reasons: Counter[str] = Counter()
    for row in rows:
        reasons.update(row.quarantine_by_reason)
    return render(
        request,
        identity,
        "batches.html",
        rows=rows,
        states=BATCH_STATES,
        state=state,
        state_chart=bar_chart(sorted(states.items()), title="batches by state"),
        reason_chart=bar_chart(reasons.most_common(8), title="quarantined rows by reason"),
    )
