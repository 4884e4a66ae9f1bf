"""The champion pair a search service answers from, and following it as the alias moves.

A *pair* is a model and the index built with it, as the ledger's ``champion`` alias
names them (invariant 3: they move together). :func:`open_pair` loads one only after
the ledger verifies (hash chain and signatures) and both folders hash to what the
ledger recorded; :class:`ChampionFollower` polls the alias and, when it moves
(promotion, rollback, index refresh), loads the new pair on a background thread and
swaps one reference. A request reads that reference once, so it is answered by one
pair from start to end, and it never waits for a load.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shelfguard.config import Settings

if TYPE_CHECKING:
    from shelfguard.ledger import AliasRecord, Ledger
    from shelfguard_train.search import CatalogSearcher

log = logging.getLogger(__name__)

__all__ = [
    "ChampionFollower",
    "LoadedPair",
    "PairRefused",
    "Refusal",
    "local_copy",
    "open_pair",
]


class PairRefused(Exception):
    """The pair the alias names cannot be served: the ledger or its files failed a check."""


def local_copy(settings: Settings, uri: str, sha256: str) -> Path:
    """A local folder with the artifact at ``uri``: itself when local, else a copy cached
    under ``$SHELFGUARD_HOME/cache/<sha256>`` (the searcher re-checks the hash)."""
    if "://" not in uri:
        return Path(uri)
    import fsspec

    target = settings.home / "cache" / sha256
    if not target.is_dir():
        fs, path = fsspec.core.url_to_fs(uri)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        partial.parent.mkdir(parents=True, exist_ok=True)
        fs.get(path.rstrip("/") + "/", str(partial) + "/", recursive=True)
        try:
            partial.rename(target)
        except OSError:
            if not target.is_dir():  # another worker's copy won the race: keep theirs
                raise
    return target


@dataclass(frozen=True)
class LoadedPair:
    """A verified model and index, loaded and ready to answer."""

    version: int
    model_sha256: str
    index_sha256: str
    searcher: CatalogSearcher
    loaded_at: datetime
    load_seconds: float

    def describe(self) -> dict[str, Any]:
        """What /readyz shows of it."""
        return {
            "version": self.version,
            "model_sha256": self.model_sha256,
            "index_sha256": self.index_sha256,
            "products": len(self.searcher.products),
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "load_seconds": round(self.load_seconds, 3),
        }


@dataclass(frozen=True)
class Refusal:
    """A pair the alias named that was not served, and why."""

    version: int
    model_sha256: str
    index_sha256: str
    reason: str
    at: datetime
    monotonic: float = field(compare=False, repr=False)

    def describe(self) -> dict[str, Any]:
        """What /readyz shows of it."""
        return {
            "version": self.version,
            "model_sha256": self.model_sha256,
            "index_sha256": self.index_sha256,
            "reason": self.reason,
            "at": self.at.isoformat(timespec="seconds"),
        }


def open_pair(
    settings: Settings,
    ledger: Ledger,
    alias: AliasRecord,
    device: str = "cpu",
    *,
    verified: bool = False,
) -> LoadedPair:
    """Verify the ledger (unless the caller just did: ``verified``) and the pair ``alias``
    names, then load it.

    Raises :class:`PairRefused` with a one-line reason when the ledger fails verification,
    the index was built by another model, or a folder's bytes differ from the sha256 the
    ledger recorded for it.
    """
    from shelfguard.ledger import LedgerTampered

    started = time.perf_counter()
    try:
        if not verified:
            ledger.require_intact()
    except LedgerTampered as exc:
        raise PairRefused(f"the ledger failed verification: {exc}") from exc
    built_by = str(alias.index.meta.get("model_sha256", ""))
    if built_by != alias.model.sha256:
        raise PairRefused(
            f"index {alias.index.sha256[:12]} was built by model {built_by[:12]}, "
            f"not by the champion model {alias.model.sha256[:12]}"
        )
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as transformers_logging

    from shelfguard_train.search import CatalogSearcher, IndexMismatchError

    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

    try:
        searcher = CatalogSearcher.open(
            local_copy(settings, alias.model.uri, alias.model.sha256),
            local_copy(settings, alias.index.uri, alias.index.sha256),
            expected_model_sha256=alias.model.sha256,
            expected_index_sha256=alias.index.sha256,
            device=device,
        )
    except (IndexMismatchError, OSError, ValueError) as exc:
        raise PairRefused(" ".join(str(exc).split())) from exc
    return LoadedPair(
        version=alias.version,
        model_sha256=alias.model.sha256,
        index_sha256=alias.index.sha256,
        searcher=searcher,
        loaded_at=datetime.now(UTC),
        load_seconds=time.perf_counter() - started,
    )


class ChampionFollower:
    """Serves the pair the alias names, swapping to a new one once it is verified and loaded.

    ``current`` is the pair to answer with (None until the first verified load); read it
    once per request. A background thread polls the alias every ``poll_seconds``; a pair
    that fails verification is refused (``refusal`` says why) and the current one keeps
    serving; a refused pair is tried again after ``retry_seconds`` in case it was repaired.
    ``read`` says which pair the alias names now (default: where it points; None: no pair
    to serve, and ``current`` goes back to None).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        alias: str = "champion",
        poll_seconds: float = 1.0,
        retry_seconds: float = 30.0,
        device: str = "cpu",
        read: Callable[[Ledger], AliasRecord | None] | None = None,
    ) -> None:
        self.settings = settings
        self.alias = alias
        self._read = read or (lambda ledger: ledger.get_alias(alias))
        self.poll_seconds = poll_seconds
        self.retry_seconds = retry_seconds
        self.device = device
        self.current: LoadedPair | None = None
        self.refusal: Refusal | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self._ledger: Ledger | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _open_ledger(self) -> Ledger:
        if self._ledger is None:
            from shelfguard.ledger import open_ledger

            self._ledger = open_ledger(self.settings.ledger_url)
        return self._ledger

    @staticmethod
    def _pair_of(alias: AliasRecord) -> tuple[str, str]:
        return alias.model.sha256, alias.index.sha256

    def check_once(self) -> bool:
        """Read the alias; load and swap to the pair it names if that is new. True on a swap."""
        ledger = self._open_ledger()
        alias = self._read(ledger)
        if alias is None:
            if self.current is not None:
                log.info("alias %s no longer names a pair to serve", self.alias)
            self.current = None
            return False
        pair = self._pair_of(alias)
        current = self.current
        if current is not None and (current.model_sha256, current.index_sha256) == pair:
            self.refusal = None  # the alias left a refused pair for the one being served
            return False
        refusal = self.refusal
        if (
            refusal is not None
            and (refusal.model_sha256, refusal.index_sha256) == pair
            and time.monotonic() - refusal.monotonic < self.retry_seconds
        ):
            return False
        log.info(
            "alias %s moved to version %d: loading model %s with index %s",
            self.alias,
            alias.version,
            pair[0][:12],
            pair[1][:12],
        )
        try:
            loaded = open_pair(self.settings, ledger, alias, self.device)
        except PairRefused as exc:
            self.refusal = Refusal(
                version=alias.version,
                model_sha256=pair[0],
                index_sha256=pair[1],
                reason=str(exc),
                at=datetime.now(UTC),
                monotonic=time.monotonic(),
            )
            log.error(
                "refused champion version %d (still serving %s): %s",
                alias.version,
                "nothing" if current is None else f"version {current.version}",
                exc,
            )
            return False
        self.current = loaded  # the swap: one reference, read once per request
        self.refusal = None
        self.swaps += 1
        log.info(
            "now serving champion version %d (loaded in %.2f s)",
            loaded.version,
            loaded.load_seconds,
        )
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
                self.last_error = None
            except Exception as exc:  # the ledger unreachable for a while: keep serving
                message = " ".join(str(exc).split())[:300]
                if message != self.last_error:
                    log.warning("cannot read the champion alias (still serving): %s", message)
                self.last_error = message
            self._stop.wait(self.poll_seconds)

    def start(self) -> None:
        """Follow the alias on a daemon thread (the first check runs at once)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name="champion-follower", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop following and let go of the ledger."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._ledger is not None:
            self._ledger.dispose()
            self._ledger = None
