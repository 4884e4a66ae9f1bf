"""Who is asking, and what they may do: Airflow's auth manager decides, on every route.

Airflow mounts a plugin's FastAPI app without authentication, so the console resolves
the user itself, exactly as Airflow's own API does (``get_user`` of Airflow's core API
security module: an ``Authorization: Bearer`` token, else the ``_token`` cookie the
login page set). Reading needs read access to DAGs; a decision needs the user to be
one the auth manager lets answer an approval assigned to the policy's approvers (the
check Airflow makes for its own Required Actions), and ``record_decision`` re-checks
the name against the run's pinned policy.

State-changing requests made with the session cookie carry a CSRF token bound to the
user and to a per-browser cookie (HttpOnly, SameSite=Strict), and must come from this
origin. A request authenticated by a bearer token carries no ambient credential, so
it needs neither.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Form, HTTPException, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

CSRF_COOKIE = "shelfguard_csrf"
CSRF_FIELD = "csrf_token"

_bearer = HTTPBearer(auto_error=False)


@dataclass(frozen=True)
class Identity:
    """The signed-in user, as Airflow's auth manager authenticated them."""

    #: The name decisions are recorded under (what Airflow's HITL answers record too).
    name: str
    #: The auth manager's user object, passed back to it for every authorization.
    user: Any
    #: True when the credential was the session cookie (so a POST needs a CSRF token).
    by_cookie: bool


def auth_manager() -> Any:
    """Airflow's auth manager of this api-server process."""
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


async def signed_in(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The authenticated user, or 401 (no or expired credential) / 403 (a forged one)."""
    # Imported here: the plugin module is imported by every Airflow process, and only the
    # api-server needs Airflow's API security machinery.
    from airflow.api_fastapi.core_api.security import get_user

    user = await get_user(request, None, bearer)
    by_cookie = bearer is None or bearer.scheme.lower() != "bearer"
    return Identity(name=str(user.get_name()), user=user, by_cookie=by_cookie)


def may_read_dag(identity: Identity, dag_id: str | None = None) -> bool:
    """Whether the auth manager grants ``identity`` read access to DAGs (or to ``dag_id``)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    details = DagDetails(id=dag_id) if dag_id else None
    return bool(auth_manager().is_authorized_dag(method="GET", user=identity.user, details=details))


def reader(identity: Annotated[Identity, Depends(signed_in)]) -> Identity:
    """A signed-in user with read access to DAGs, or 403."""
    if not may_read_dag(identity):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{identity.name} may not read DAGs")
    return identity


Reader = Annotated[Identity, Depends(reader)]


def may_decide(identity: Identity, approvers: list[str]) -> bool:
    """Whether the auth manager lets ``identity`` answer an approval assigned to ``approvers``.

    The same check Airflow makes before a user answers a Required Action assigned to
    these users; with no approvers listed, nobody decides.
    """
    if not approvers:
        return False
    return bool(
        auth_manager().is_authorized_hitl_task(assigned_users=set(approvers), user=identity.user)
    )


def _secret() -> bytes:
    from airflow.configuration import conf

    return str(conf.get("api", "secret_key")).encode("utf-8")


def _browser_key(request: Request) -> str:
    """This browser's CSRF cookie value, or a new one (set on the response by :func:`keep_csrf_cookie`)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing:
        return existing
    fresh: str | None = getattr(request.state, "new_csrf_cookie", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.new_csrf_cookie = fresh
    return fresh


def csrf_token(request: Request, identity: Identity) -> str:
    """The token a form posted by this user from this browser must carry."""
    message = f"{identity.name}|{_browser_key(request)}".encode()
    return hmac.new(_secret(), message, hashlib.sha256).hexdigest()


def keep_csrf_cookie(request: Request, response: Response) -> None:
    """Set the browser's CSRF cookie when this request made a new one."""
    fresh = getattr(request.state, "new_csrf_cookie", None)
    if fresh:
        response.set_cookie(
            CSRF_COOKIE,
            fresh,
            path=request.scope.get("root_path") or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )


def _same_origin(request: Request) -> bool:
    """The request's Origin (or, lacking one, its Referer) names this server."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return False
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or ""
    return urlsplit(source).netloc == host


def decider(
    request: Request,
    identity: Annotated[Identity, Depends(reader)],
    csrf: Annotated[str, Form(alias=CSRF_FIELD)] = "",
) -> Identity:
    """A reader making a state-changing request: with the session cookie, only from this
    origin and with the CSRF token of their session (403 otherwise)."""
    if identity.by_cookie:
        if not _same_origin(request):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "cross-origin request refused")
        expected = hmac.new(
            _secret(),
            f"{identity.name}|{request.cookies.get(CSRF_COOKIE, '')}".encode(),
            hashlib.sha256,
        ).hexdigest()
        if not request.cookies.get(CSRF_COOKIE) or not hmac.compare_digest(csrf, expected):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or stale form token: reload")
    return identity


Decider = Annotated[Identity, Depends(decider)]
