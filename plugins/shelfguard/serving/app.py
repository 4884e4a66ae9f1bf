"""``shelfguard serve``: the ASGI search service that answers from the champion pair.

Routes (OpenAPI at ``/docs``):

- ``GET /search?q=&k=&session=&user=``: the ``k`` nearest products, with the champion
  version and the model and index sha256 that answered, and a ``search_id`` to click on;
  while a canary runs, a share of sessions is answered by the canary pair instead
  (``served_by``; see ``shelfguard.serving.routing``);
- ``POST /click``: a shopper clicked (added to cart, bought) one of a search's results;
- ``GET /healthz``: the process is up; ``GET /readyz``: a verified pair is loaded (503
  until then), with what is served, what was refused and why, and the served log.

Concurrent searches are answered in micro-batches: one consumer takes every query
waiting, encodes them in one call and searches the index once, so eight shoppers cost
little more than one. A batch reads the served pair once: every answer in it comes from
one model and its own index, also while the alias moves.

Bad input is a 4xx with a one-line ``detail``, never a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shelfguard.config import Settings, load_settings
from shelfguard.model.canary import running as canary_running
from shelfguard.serving.pairs import ChampionFollower, LoadedPair
from shelfguard.serving.routing import CANARY, Router
from shelfguard.serving.served_log import Refused, ServedLog

log = logging.getLogger(__name__)

__all__ = ["MAX_K", "MAX_QUERY_CHARS", "ServeOptions", "app_from_env", "create_app"]

MAX_K = 100
MAX_QUERY_CHARS = 256
#: Pseudonymous ids only: letters, digits and ``._:-``; an e-mail address is refused.
_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
OPTIONS_ENV = "SHELFGUARD_SERVE_OPTIONS"


@dataclass(frozen=True)
class ServeOptions:
    """How the service follows the champion and logs what it served."""

    poll_seconds: float = 1.0
    retry_seconds: float = 30.0
    click_window: float = 600.0
    rotate_seconds: float = 300.0
    max_batch: int = 32
    device: str = "cpu"
    #: Where rotated delivery folders go (default: ``<landing folder>/served``).
    log_dir: str | None = None
    alias: str = "champion"
    #: The canary's share of sessions; None: the policy in force (``canary.share``).
    canary_share: float | None = None

    def log_folder(self, settings: Settings) -> Path:
        """Where the delivery folders go: ``log_dir``, else ``<landing folder>/served``."""
        return Path(self.log_dir) if self.log_dir else settings.landing_dir / "served"

    def to_env(self) -> str:
        """The options as the JSON a worker process reads from :data:`OPTIONS_ENV`."""
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeOptions:
        """The options the ``serve`` command passed to its worker processes."""
        raw = os.environ.get(OPTIONS_ENV)
        return cls(**json.loads(raw)) if raw else cls()


class Hit(BaseModel):
    """One product in an answer."""

    rank: int
    product_id: int
    product_name: str
    product_class: str
    score: float


class SearchAnswer(BaseModel):
    """An answer, with the pair that produced it."""

    search_id: str = Field(description="pass it to POST /click")
    query: str
    k: int
    served_by: str = Field(description="champion, or canary for a canary's share of sessions")
    champion_version: int = Field(description="the version of the alias that answered")
    model_sha256: str
    index_sha256: str
    hits: list[Hit]


class Click(BaseModel):
    """A shopper's click on one result of an answered search."""

    search_id: str = Field(min_length=1, max_length=64)
    product_id: int
    position: int = Field(ge=1, le=MAX_K, description="1 = the first result")
    added_to_cart: bool = False
    purchased: bool = False


class Problem(BaseModel):
    """A refused request: one line saying why."""

    detail: str


@dataclass
class _Job:
    query: str
    k: int
    pair: LoadedPair
    future: asyncio.Future[list[Any]]


class Batcher:
    """Answers queued searches in batches; each search is answered by the pair it was
    given (read once, when it was routed), searches of one pair in one call."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0
        self.answered = 0
        self.busy_seconds = 0.0  # inside the encoder and the ANN search

    async def search(self, query: str, k: int, pair: LoadedPair) -> list[Any]:
        """The hits of ``pair`` for ``query``, once the batch holding this query ran."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(_Job(query, k, pair, future))
        return await future

    async def run(self) -> None:
        """Consume the queue until cancelled."""
        while True:
            jobs = [await self.queue.get()]
            while len(jobs) < self.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            by_pair: dict[int, list[_Job]] = {}
            for job in jobs:
                by_pair.setdefault(id(job.pair), []).append(job)
            for group in by_pair.values():
                await self._answer(group[0].pair, group)

    async def _answer(self, pair: LoadedPair, jobs: list[_Job]) -> None:
        """One encoder call and one index search for the searches given ``pair``."""
        started = time.perf_counter()
        try:
            answers = await asyncio.to_thread(
                pair.searcher.search_many, [job.query for job in jobs], max(j.k for j in jobs)
            )
        except Exception as exc:  # answer every waiting request, then go on
            log.exception("a search batch failed")
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.busy_seconds += time.perf_counter() - started
        self.batches += 1
        self.answered += len(jobs)
        for job, hits in zip(jobs, answers, strict=True):
            if not job.future.done():  # the client may have gone
                job.future.set_result(hits[: job.k])


def _one_line(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
    message = str(first.get("msg", "invalid value"))
    return f"{where}: {message}" if where else message


def _normalised_query(q: str) -> str:
    query = " ".join(q.split())
    if not query:
        raise Refused("q: the query is empty: give the words to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise Refused(f"q: the query is over {MAX_QUERY_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in query):
        raise Refused("q: the query holds control characters")
    return query


def _pseudonymous(value: str | None, what: str, default: str) -> str:
    if value is None or value == "":
        return default
    if "@" in value:
        raise Refused(
            f"{what}: looks like an e-mail address; pass a pseudonymous id, never an e-mail"
        )
    if not _ID.match(value):
        raise Refused(f"{what}: use 1 to 128 letters, digits or . _ : -")
    return value


class _Service:
    """One worker's parts: the follower, the batcher and the served log."""

    def __init__(self, settings: Settings, options: ServeOptions) -> None:
        champion, canary = (
            ChampionFollower(
                settings,
                alias=alias,
                poll_seconds=options.poll_seconds,
                retry_seconds=options.retry_seconds,
                device=options.device,
                read=read,
            )
            # An ended canary still names a pair (the champion's of its time): the
            # canary follower serves only while one runs.
            for alias, read in ((options.alias, None), (CANARY, canary_running))
        )
        self.follower = champion
        self.router = Router(champion, canary, options.canary_share, settings)
        self.served = ServedLog(
            options.log_folder(settings),
            click_window=options.click_window,
            rotate_seconds=options.rotate_seconds,
        )
        self.batcher = Batcher(options.max_batch)
        self._tick = min(5.0, options.rotate_seconds)
        self._stop_rotating = threading.Event()

    def _rotate_forever(self) -> None:
        while not self._stop_rotating.wait(self._tick):
            try:
                if self.served.rotation_due():
                    self.served.rotate()
            except Exception:  # a full disk, say: keep serving, say so, try again
                log.exception("could not rotate the served log")

    @contextlib.asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        """Follow the alias, answer batches and rotate the log while the app runs."""
        for follower in self.router.followers():
            follower.start()
        consumer = asyncio.create_task(self.batcher.run(), name="search-batcher")
        rotator = threading.Thread(
            target=self._rotate_forever, name="served-log-rotation", daemon=True
        )
        rotator.start()
        try:
            yield
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            self._stop_rotating.set()
            rotator.join(timeout=10)
            for follower in self.router.followers():
                follower.stop()
            try:  # what was served is written out, whatever clicks come later
                self.served.rotate(everything=True)
            except Exception:
                log.exception("could not write the served log on shutdown")


def _service(request: Request) -> _Service:
    service: _Service = request.app.state.service
    return service


_NOT_READY = "not ready: no verified champion pair loaded yet"
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    503: {"model": Problem, "description": "no verified champion pair loaded yet"},
    422: {"model": Problem, "description": "bad input, with a one-line reason"},
}
router = APIRouter()


@router.get("/search", response_model=SearchAnswer, responses=_PROBLEMS)
async def search(
    service: Annotated[_Service, Depends(_service)],
    q: Annotated[str, Query(description="the shopper's words", max_length=4 * MAX_QUERY_CHARS)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="how many products")] = 10,
    session: Annotated[str | None, Query(description="pseudonymous session id")] = None,
    user: Annotated[str | None, Query(description="pseudonymous user id, never an e-mail")] = None,
) -> Any:
    """The ``k`` products nearest to ``q``, from the champion pair, with its hashes."""
    query = _normalised_query(q)
    session_id = _pseudonymous(session, "session", "anonymous")
    user_id = _pseudonymous(user, "user", "anonymous")
    arm, pair = service.router.choose(session_id)
    if pair is None:
        return JSONResponse({"detail": _NOT_READY}, status_code=503)
    hits = await service.batcher.search(query, k, pair)
    search_id = uuid.uuid4().hex
    await asyncio.to_thread(
        service.served.impression,
        search_id,
        session_id=session_id,
        user_id=user_id,
        query=query,
        product_ids=[hit.product_id for hit in hits],
        pair=(pair.model_sha256, pair.index_sha256),
        arm=arm,
    )
    return {
        "search_id": search_id,
        "query": query,
        "k": k,
        "served_by": arm,
        "champion_version": pair.version,
        "model_sha256": pair.model_sha256,
        "index_sha256": pair.index_sha256,
        "hits": [
            {
                "rank": hit.rank,
                "product_id": hit.product_id,
                "product_name": hit.product_name,
                "product_class": hit.product_class,
                "score": round(float(hit.score), 6),
            }
            for hit in hits
        ],
    }


@router.post("/click", status_code=202, responses={**_PROBLEMS, 410: {"model": Problem}})
async def click(service: Annotated[_Service, Depends(_service)], body: Click) -> dict[str, Any]:
    """Record a click (and add-to-cart, purchase) on one result of an answered search."""
    checked = await asyncio.to_thread(
        service.served.click,
        body.search_id,
        product_id=body.product_id,
        position=body.position,
        added_to_cart=body.added_to_cart,
        purchased=body.purchased,
    )
    return {"recorded": True, "checked_against_search": checked}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up (it may not be ready: see /readyz)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready, with the details"}})
async def readyz(service: Annotated[_Service, Depends(_service)]) -> JSONResponse:
    """Ready once a verified pair is loaded; what is served, what was refused and why."""
    follower, served = service.follower, service.served
    current = follower.current
    canary = service.router.active_canary()
    body = {
        "ready": current is not None,
        "serving": None if current is None else current.describe(),
        "canary": None
        if canary is None
        else {**canary.describe(), "share": service.router.share()},
        "refused": None if follower.refusal is None else follower.refusal.describe(),
        "ledger_error": follower.last_error,
        "swaps": follower.swaps,
        "answered": service.batcher.answered,
        "batches": service.batcher.batches,
        "busy_seconds": round(service.batcher.busy_seconds, 3),
        "served_log": {
            "folder": str(served.folder),
            "pending_lines": served.pending(),
            "parts": len(served.parts()),
        },
        "pid": os.getpid(),
    }
    return JSONResponse(body, status_code=200 if current is not None else 503)


async def _one_line_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _one_line(exc)}, status_code=422)


async def _refused(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    return JSONResponse({"detail": str(exc)}, status_code=exc.status)


def create_app(settings: Settings | None = None, options: ServeOptions | None = None) -> FastAPI:
    """The search service on ``settings``' ledger and landing folder."""
    service = _Service(settings or load_settings(), options or ServeOptions())
    app = FastAPI(
        title="shelfguard search",
        version="1",
        summary="Product search from the governed champion model and index.",
        lifespan=service.lifespan,
    )
    app.state.service = service
    app.add_exception_handler(RequestValidationError, _one_line_validation)
    app.add_exception_handler(Refused, _refused)
    app.include_router(router)
    return app


def app_from_env() -> FastAPI:
    """The app a worker process builds (``uvicorn --factory``), from the environment."""
    return create_app(load_settings(), ServeOptions.from_env())
