"""What every console route shares: the ledger, the page renderer, relative links."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from shelfguard.console.auth import CSRF_FIELD, Identity, csrf_token, keep_csrf_cookie, may_read_dag
from shelfguard.ledger import Ledger, open_ledger

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")
_LOCK = threading.Lock()


def get_ledger(request: Request) -> Ledger:
    """The ledger of this api-server's shelfguard home, opened once per app."""
    state = request.app.state
    ledger: Ledger | None = getattr(state, "ledger", None)
    if ledger is None:
        with _LOCK:
            ledger = getattr(state, "ledger", None)
            if ledger is None:
                from shelfguard.config import load_settings

                ledger = open_ledger(load_settings().ledger_url)
                state.ledger = ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]


def readable_dags(identity: Identity, ledger: Ledger) -> set[str]:
    """The DAG ids with runs in the ledger that the auth manager lets ``identity`` read."""
    from shelfguard.console.views import known_dags

    return {dag_id for dag_id in known_dags(ledger) if may_read_dag(identity, dag_id)}


def base_href(request: Request) -> str:
    """The relative path from this page back to the console's root (``./``, ``../``...).

    Links are relative so the console works under any prefix a proxy puts it behind.
    """
    root = str(request.scope.get("root_path") or "")
    path = request.url.path
    inside = path[len(root) :] if path.startswith(root) else path
    depth = inside.count("/") - 1
    return "../" * depth if depth > 0 else "./"


def run_href(run_id: str) -> str:
    """The Run page of ``run_id``, relative to the console's root."""
    return "runs/" + quote(run_id, safe="/")


def render(
    request: Request,
    identity: Identity,
    template: str,
    *,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page: the template with the user, their form token and relative links."""
    response = templates.TemplateResponse(
        request,
        template,
        {
            "user": identity,
            "base": base_href(request),
            "csrf_field": CSRF_FIELD,
            "csrf": csrf_token(request, identity),
            "run_href": run_href,
            **context,
        },
        status_code=status_code,
    )
    keep_csrf_cookie(request, response)
    return response
