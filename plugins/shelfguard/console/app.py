"""The console's FastAPI app: routers, its own static files, errors as pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shelfguard.console.auth import Reader
from shelfguard.console.deps import HERE, base_href, templates
from shelfguard.console.routes import approvals, batches, champion, runs

_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
# Everything the pages use is served by the app itself; the Airflow UI may frame it.
_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'self'; base-uri 'self'"
)


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _login_url(request: Request) -> str | None:
    try:
        from shelfguard.console.auth import auth_manager

        return str(auth_manager().get_url_login(next_url=str(request.url.path)))
    except Exception:  # no auth manager in this process: the page still explains the 401
        return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    headers = getattr(exc, "headers", None)
    if not _wants_html(request):
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": exc.status_code,
            "detail": detail,
            "base": base_href(request),
            "login_url": _login_url(request) if exc.status_code == 401 else None,
            "user": None,
            "csrf": None,
        },
        status_code=exc.status_code,
        headers=headers,
    )


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return await _http_error(
        request,
        HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"{where}: {first.get('msg', 'invalid')}"
        ),
    )


def create_app() -> FastAPI:
    """The console app (mounted by the Airflow plugin under ``/shelfguard``)."""
    app = FastAPI(
        title="shelfguard governance console",
        description="Runs, approvals, the champion and batches, from the governance ledger.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    for router in (runs.router, approvals.router, champion.router, batches.router):
        app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str, _: Reader) -> FileResponse:
        """The console's stylesheet and script (served here, never from a CDN)."""
        if name not in _STATIC:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such file")
        return FileResponse(HERE / "static" / name, media_type=_STATIC[name])

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Any]]
    ) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
