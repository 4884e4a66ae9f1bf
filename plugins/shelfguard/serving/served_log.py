"""What the search service served and what shoppers did with it, as landed batches.

Every answered search is one *impression* row per product shown, in the
``search_log.csv`` layout the generator writes and ``catalog_refresh`` ingests; a later
``POST /click`` sets the clicked, added-to-cart and purchased flags of one of them.

How it reaches ingestion without ever exposing a half-written file:

1. Each event is appended, as one JSON line in one ``write()``, to a journal in
   ``<folder>/.spool/`` (a hidden folder ingestion never reads). Every worker process
   of the service appends to the same journal under a shared ``flock``.
2. A rotation (every ``rotate_seconds``, by whichever worker comes first, under the
   exclusive lock) folds the searches older than the click window with their clicks
   into rows, writes them to ``search_log.csv`` in a hidden ``.part-*`` folder, fsyncs
   it and renames the folder to ``<folder>/served-<UTC time>-<id>/``: a delivery folder
   that appears whole or not at all. The journal keeps only the younger searches.
3. ``catalog_refresh`` with ``source=<that folder>`` lands it as a batch (a batch of
   behaviour alone reads the catalog of the published marts) and gates it.

A crash loses nothing the journal holds: a torn last line (a write cut short) is
skipped and counted, a ``.part-*`` folder left behind is removed by the next rotation,
and a part renamed into place before the journal was rewritten is folded again, which
staging reads as one impression (the latest delivery of a (search, position) wins).

User and session ids are written as the caller gave them: pseudonymous ids, never an
e-mail (``user_email`` stays empty); ingestion replaces the user id by its keyed
pseudonym. A click more than ``click_window`` seconds after its search is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shelfguard.data.generator import SEARCH_LOG_COLUMNS
from shelfguard.model.online import ServedSearch

log = logging.getLogger(__name__)

__all__ = [
    "PAIRS_FILE",
    "PART_PREFIX",
    "SPOOL",
    "Refused",
    "RotatedPart",
    "ServedLog",
    "served_by_pair",
]

SPOOL = ".spool"
#: Beside each delivery's search_log.csv: the arm and pair that answered each search.
PAIRS_FILE = "served_pairs.csv"
PAIRS_COLUMNS = ("search_id", "arm", "model_sha256", "index_sha256")
JOURNAL = "journal.jsonl"
PART_PREFIX = "served-"
#: How many recent searches each worker remembers to check a click against.
_REMEMBERED = 200_000
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


class Refused(ValueError):
    """A request refused with a one-line reason; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RotatedPart:
    """One delivery folder a rotation wrote."""

    folder: Path
    searches: int
    impressions: int
    clicks: int
    unmatched_clicks: int
    torn_lines: int


def _clean(value: str, what: str) -> str:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{what} holds a tab or a line break: it would break the TSV layout")
    return value


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC).timestamp()


@dataclass
class _Fold:
    """What a rotation writes (``ordered`` searches with their click ``flags``) and keeps."""

    ordered: list[str]
    flags: dict[tuple[str, int], list[int]]
    kept_lines: list[int]
    matched: int
    unmatched: int


@dataclass
class _Journal:
    """The journal's searches and clicks, each with its line number."""

    searches: dict[str, dict[str, Any]]
    clicks: list[dict[str, Any]]
    torn: int

    @classmethod
    def parse(cls, raw_lines: Sequence[bytes]) -> _Journal:
        searches: dict[str, dict[str, Any]] = {}
        clicks: list[dict[str, Any]] = []
        torn = 0
        for number, raw in enumerate(raw_lines):
            try:
                record = json.loads(raw)
                kind = record["t"]
            except (ValueError, KeyError, TypeError):
                torn += 1  # a write cut short by a crash
                continue
            if kind == "s":
                searches[record["id"]] = {**record, "_line": number}
            elif kind == "c":
                clicks.append({**record, "_line": number})
        return cls(searches, clicks, torn)

    def _fits(self, click: dict[str, Any]) -> bool:
        products = self.searches[click["id"]]["p"]
        position = click["pos"]
        return bool(1 <= position <= len(products) and products[position - 1] == click["p"])

    def fold(self, due: set[str]) -> _Fold:
        """Clicks folded into the ``due`` searches; the rest's lines kept for later."""
        flags: dict[tuple[str, int], list[int]] = {}
        kept = [r["_line"] for sid, r in self.searches.items() if sid not in due]
        matched = unmatched = 0
        for click in self.clicks:
            sid = click["id"]
            if sid in self.searches and sid not in due:
                kept.append(click["_line"])  # its search is still inside the click window
            elif sid not in self.searches or not self._fits(click):
                unmatched += 1  # another worker's search already written, or a wrong click
            else:
                state = flags.setdefault((sid, click["pos"]), [0, 0, 0])
                state[0] = 1
                state[1] |= click["cart"]
                state[2] |= click["buy"]
                matched += 1
        ordered = sorted(
            due, key=lambda sid: (self.searches[sid]["at"], self.searches[sid]["_line"])
        )
        return _Fold(ordered, flags, sorted(kept), matched, unmatched)


class ServedLog:
    """The journal and the rotated delivery folders under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        click_window: float = 600.0,
        rotate_seconds: float = 300.0,
    ) -> None:
        self.folder = Path(folder)
        self.spool = self.folder / SPOOL
        self.journal = self.spool / JOURNAL
        self.click_window = click_window
        self.rotate_seconds = rotate_seconds
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock_path = self.spool / "lock"
        self._marker = self.spool / "rotated"
        self._recent: OrderedDict[str, tuple[float, tuple[int, ...]]] = OrderedDict()
        self._recent_lock = threading.Lock()

    # -- writing events -----------------------------------------------------------------

    @contextmanager
    def _flock(self, mode: int) -> Iterator[None]:
        try:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:  # the folder was removed under the service: make it again
            log.warning("the served log's folder %s was removed; making it again", self.spool)
            self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._flock(fcntl.LOCK_SH):
            fd = os.open(self.journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                # One write() with O_APPEND: workers' lines never interleave.
                written = os.write(fd, line)
            finally:
                os.close(fd)
        if written != len(line):
            raise OSError(f"the served-search journal took {written} of {len(line)} bytes")

    def impression(
        self,
        search_id: str,
        *,
        session_id: str,
        user_id: str,
        query: str,
        product_ids: Sequence[int],
        at: datetime | None = None,
        pair: tuple[str, str] = ("", ""),
        arm: str = "champion",
    ) -> None:
        """Record that ``product_ids`` were shown, in this order, for one search, by the
        ``pair`` (model and index sha256) of ``arm`` (``champion`` or ``canary``)."""
        when = (at or datetime.now(UTC)).astimezone(UTC)
        self._append(
            {
                "t": "s",
                "id": _clean(search_id, "search id"),
                "session": _clean(session_id, "session id"),
                "user": _clean(user_id, "user id"),
                "at": when.strftime(_STAMP),
                "q": _clean(query, "query"),
                "p": [int(p) for p in product_ids],
                "arm": arm,
                "m": pair[0],
                "i": pair[1],
            }
        )
        with self._recent_lock:
            self._recent[search_id] = (time.monotonic(), tuple(int(p) for p in product_ids))
            while len(self._recent) > _REMEMBERED:
                self._recent.popitem(last=False)

    def click(
        self,
        search_id: str,
        *,
        product_id: int,
        position: int,
        added_to_cart: bool = False,
        purchased: bool = False,
    ) -> bool:
        """Record a click on the product shown at ``position`` (1 = first) of a search.

        Returns True when this worker served the search and checked the click against it,
        False when another worker did (the rotation matches it then, or drops and counts
        it). Raises :class:`Refused` for a product that was not at that position, or a
        click after the click window.
        """
        with self._recent_lock:
            known = self._recent.get(search_id)
        if known is not None:
            served_at, products = known
            if time.monotonic() - served_at > self.click_window:
                raise Refused(
                    f"search {search_id} was served over {self.click_window:.0f} s ago: "
                    "its click window is closed",
                    status=410,
                )
            if not 1 <= position <= len(products):
                raise Refused(
                    f"position {position} is outside the {len(products)} results of search "
                    f"{search_id}"
                )
            if products[position - 1] != product_id:
                raise Refused(
                    f"search {search_id} showed product {products[position - 1]} at position "
                    f"{position}, not {product_id}"
                )
        self._append(
            {
                "t": "c",
                "id": _clean(search_id, "search id"),
                "pos": int(position),
                "p": int(product_id),
                "cart": int(bool(added_to_cart)),
                "buy": int(bool(purchased)),
            }
        )
        return known is not None

    # -- rotation -----------------------------------------------------------------------

    def rotation_due(self, now: float | None = None) -> bool:
        """Whether ``rotate_seconds`` passed since the last rotation of any worker."""
        now = time.time() if now is None else now
        try:
            last = self._marker.stat().st_mtime
        except FileNotFoundError:
            return self.journal.exists()
        return now - last >= self.rotate_seconds

    def rotate(
        self, *, everything: bool = False, now: datetime | None = None
    ) -> RotatedPart | None:
        """Fold the searches past the click window (all with ``everything``) into a
        delivery folder; None when there were none."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        with self._flock(fcntl.LOCK_EX):
            for stale in self.folder.glob(".part-*"):  # a rotation that died half-way
                shutil.rmtree(stale, ignore_errors=True)
            self._marker.touch()
            try:
                raw_lines = self.journal.read_bytes().splitlines(keepends=True)
            except FileNotFoundError:
                return None
            journal = _Journal.parse(raw_lines)
            cutoff = now.timestamp() - self.click_window
            due = {
                sid
                for sid, record in journal.searches.items()
                if everything or _epoch(record["at"]) <= cutoff
            }
            fold = journal.fold(due)
            kept = [raw_lines[n] for n in fold.kept_lines]
            if not due:
                if journal.torn or fold.unmatched:
                    self._rewrite_journal(kept)
                return None
            part = self._write_part(journal.searches, fold, now, journal.torn)
            self._rewrite_journal(kept)
        log.info(
            "served log: %d searches (%d impressions, %d clicks) written to %s",
            part.searches,
            part.impressions,
            part.clicks,
            part.folder,
        )
        return part

    def _write_part(
        self, searches: dict[str, dict[str, Any]], fold: _Fold, now: datetime, torn: int
    ) -> RotatedPart:
        ordered, flags = fold.ordered, fold.flags
        token = uuid.uuid4().hex[:8]
        tmp = self.folder / f".part-{token}"
        tmp.mkdir(mode=0o700)
        impressions = 0
        with open(tmp / "search_log.csv", "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\t".join(SEARCH_LOG_COLUMNS) + "\n")
            for sid in ordered:
                record = searches[sid]
                prefix = f"{sid}\t{record['session']}\t{record['user']}\t\t{record['at']}\t{record['q']}\t"
                for position, product_id in enumerate(record["p"], start=1):
                    clicked, cart, buy = flags.get((sid, position), (0, 0, 0))
                    handle.write(f"{prefix}{product_id}\t{position}\t{clicked}\t{cart}\t{buy}\n")
                    impressions += 1
            handle.flush()
            os.fsync(handle.fileno())
        # Which pair answered each search (the canary's evidence); ingestion reads only
        # the files a batch is made of, so this one stays beside them.
        with open(tmp / PAIRS_FILE, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\t".join(PAIRS_COLUMNS) + "\n")
            for sid in ordered:
                record = searches[sid]
                arm, model, index = (
                    record.get("arm", "champion"),
                    record.get("m", ""),
                    record.get("i", ""),
                )
                handle.write(f"{sid}\t{arm}\t{model}\t{index}\n")
            handle.flush()
            os.fsync(handle.fileno())
        summary = {
            "written_by": "shelfguard serve",
            "written_at": now.strftime(_STAMP),
            "searches": len(ordered),
            "impressions": impressions,
            "clicks": fold.matched,
            "unmatched_clicks": fold.unmatched,
            "torn_journal_lines": torn,
            "first_search_at": searches[ordered[0]]["at"],
            "last_search_at": searches[ordered[-1]]["at"],
        }
        with open(tmp / "served.json", "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(tmp)
        final = self.folder / f"{PART_PREFIX}{now.strftime('%Y%m%dT%H%M%SZ')}-{token}"
        os.rename(tmp, final)  # the delivery appears whole, or not at all
        _fsync_dir(self.folder)
        return RotatedPart(final, len(ordered), impressions, fold.matched, fold.unmatched, torn)

    def _rewrite_journal(self, lines: list[bytes]) -> None:
        fresh = self.spool / f"{JOURNAL}.new"
        with open(fresh, "wb") as handle:
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(fresh, self.journal)
        _fsync_dir(self.spool)

    def parts(self) -> list[Path]:
        """The delivery folders written so far, oldest first."""
        return sorted(p for p in self.folder.glob(f"{PART_PREFIX}*") if p.is_dir())

    def pending(self) -> int:
        """Lines in the journal (searches and clicks not yet rotated)."""
        try:
            with open(self.journal, "rb") as handle:
                return sum(1 for _ in handle)
        except FileNotFoundError:
            return 0


def served_by_pair(
    folder: Path, since: datetime | None = None
) -> dict[tuple[str, str], list[ServedSearch]]:
    """Every search the delivery folders under ``folder`` hold (those made at ``since``
    or later, when given), grouped by the (model, index) sha256 pair that answered it,
    with its session and clicks by position.

    Deliveries written before pairs were recorded have no ``served_pairs.csv`` and are
    skipped: nothing there says which pair answered.
    """
    grouped: dict[tuple[str, str], list[ServedSearch]] = {}
    first = None if since is None else since.astimezone(UTC).strftime(_STAMP)
    for part in sorted(p for p in folder.glob(f"{PART_PREFIX}*") if p.is_dir()):
        pairs_path = part / PAIRS_FILE
        if not pairs_path.is_file():
            continue
        answered: dict[str, tuple[str, str]] = {}
        for line in pairs_path.read_text(encoding="utf-8").splitlines()[1:]:
            sid, _, model, index = line.split("\t")
            answered[sid] = (model, index)
        sessions: dict[str, str] = {}
        clicks: dict[str, list[int]] = {}
        for line in (part / "search_log.csv").read_text(encoding="utf-8").splitlines()[1:]:
            fields = line.split("\t")
            sid, position, clicked = fields[0], int(fields[7]), int(fields[8])
            if first is not None and fields[4] < first:  # searched_at, ISO: compares as text
                continue
            sessions[sid] = fields[1]
            shown = clicks.setdefault(sid, [])
            shown.extend([0] * (position - len(shown)))
            shown[position - 1] = clicked
        for sid, pair in answered.items():
            if sid in clicks:
                grouped.setdefault(pair, []).append(ServedSearch(sessions[sid], tuple(clicks[sid])))
    return grouped
