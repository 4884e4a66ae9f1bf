"""Which pair answers a shopping session: the champion's, or the canary's for a share.

While the ``canary`` alias names an approved challenger pair other than the champion's,
the sessions whose id hashes below the canary share are answered by it, every search of
such a session alike (a shopper never sees the two rankings mix), and every other
session by the champion. The share is the service's ``--canary-share``, else the
policy in force (``canary.share``), read again at most every ``policy_seconds``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time

from shelfguard.config import Settings
from shelfguard.policy import CanaryPolicy
from shelfguard.serving.pairs import ChampionFollower, LoadedPair

log = logging.getLogger(__name__)

__all__ = ["CANARY", "Router", "in_share"]

#: The alias naming a challenger served to a share of sessions.
CANARY = "canary"
_BUCKETS = 1 << 32


def in_share(session_id: str, share: float) -> bool:
    """Whether the session falls in the first ``share`` of sessions (a hash of its id:
    the same session always gets the same answer, and sessions spread evenly)."""
    bucket = int.from_bytes(hashlib.sha256(session_id.encode("utf-8")).digest()[:4], "big")
    return bucket < share * _BUCKETS


class Router:
    """Picks the arm (``champion`` or ``canary``) and the loaded pair for a session."""

    def __init__(
        self,
        champion: ChampionFollower,
        canary: ChampionFollower,
        share: float | None,
        settings: Settings,
        policy_seconds: float = 30.0,
    ) -> None:
        self.champion = champion
        self.canary = canary
        self._fixed_share = share
        self._settings = settings
        self._policy_seconds = policy_seconds
        self._policy_share = CanaryPolicy().share
        self._policy_read = float("-inf")
        self._lock = threading.Lock()

    def share(self) -> float:
        """The canary's share of sessions now."""
        if self._fixed_share is not None:
            return self._fixed_share
        with self._lock:
            if time.monotonic() - self._policy_read >= self._policy_seconds:
                self._policy_read = time.monotonic()
                self._policy_share = self._share_in_force()
            return self._policy_share

    def _share_in_force(self) -> float:
        from shelfguard.ledger import open_ledger
        from shelfguard.policy_approval import in_force

        try:
            ledger = open_ledger(self._settings.ledger_url)
            try:
                found = in_force(ledger)
            finally:
                ledger.dispose()
        except Exception as exc:  # keep the last share; the ledger may be back soon
            log.warning("cannot read the canary share of the policy in force: %s", exc)
            return self._policy_share
        return found.policy.canary.share if found is not None else CanaryPolicy().share

    def active_canary(self) -> LoadedPair | None:
        """The canary pair while it differs from the champion's, else None."""
        champion, canary = self.champion.current, self.canary.current
        if champion is None or canary is None:
            return None
        if (canary.model_sha256, canary.index_sha256) == (
            champion.model_sha256,
            champion.index_sha256,
        ):
            return None  # the canary ended: its alias was moved onto the champion's pair
        return canary

    def choose(self, session_id: str) -> tuple[str, LoadedPair | None]:
        """(arm, pair) for one search of ``session_id``; pair None: nothing loaded yet."""
        canary = self.active_canary()
        if canary is not None and in_share(session_id, self.share()):
            return CANARY, canary
        return "champion", self.champion.current

    def followers(self) -> tuple[ChampionFollower, ChampionFollower]:
        """The two alias followers (champion first)."""
        return (self.champion, self.canary)
