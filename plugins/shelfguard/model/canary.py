"""Canary: an approved challenger tried on a share of shoppers before it is champion.

The ``canary`` alias of the ledger names the pair the search service answers a share
of sessions with (``shelfguard.serving.routing``); it moves like the champion alias, in
one transaction with its history row and a chain entry, so every pair a shopper ever
saw is on record:

- :func:`start` moves it to a run's pair once that run holds every piece of evidence a
  promotion needs (its gates passed, its approval valid: :func:`promotion.check_promotion`);
  nothing reaches shoppers, not even a share of them, that could not be promoted.
- :func:`end` moves it back onto the champion's pair: the service stops splitting
  sessions (a canary on the champion's own pair is no canary).
- :func:`evidence` reads what the service served (its delivery folders record the pair
  that answered each search) and :func:`judge` applies the policy's online test
  (:mod:`shelfguard.model.online`); the online gate records the verdict
  (:mod:`shelfguard.gates.online`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shelfguard.config import Settings
from shelfguard.ledger import AliasRecord, Ledger
from shelfguard.model.online import GATE, Arm, OnlineVerdict, arm_of, compare
from shelfguard.model.promotion import ALIAS, PromotionRefused, check_promotion, move_to
from shelfguard.policy import CanaryPolicy, Policy
from shelfguard.serving.routing import CANARY
from shelfguard.serving.served_log import served_by_pair

__all__ = [
    "GATE",
    "CanaryError",
    "Evidence",
    "end",
    "evidence",
    "judge",
    "running",
    "start",
]


class CanaryError(RuntimeError):
    """A canary cannot start or be judged; the message says why."""


def _pair(alias: AliasRecord) -> tuple[str, str]:
    return alias.model.sha256, alias.index.sha256


def start(ledger: Ledger, policy: Policy, run_id: str) -> AliasRecord:
    """Point the ``canary`` alias at ``run_id``'s pair; raises :class:`CanaryError` when
    there is no champion to compare with, or the run could not be promoted."""
    champion = ledger.get_alias(ALIAS)
    if champion is None:
        raise CanaryError("no champion yet: a first model is promoted without a canary")
    try:
        candidate = check_promotion(ledger, policy, run_id, online=False)
    except PromotionRefused as exc:
        raise CanaryError(f"run {run_id} cannot be a canary: {exc}") from exc
    if (candidate.model.sha256, candidate.index.sha256) == _pair(champion):
        raise CanaryError(f"run {run_id}'s pair is already the champion")
    before = ledger.get_alias(CANARY)
    why = f"canary on {policy.canary.share:.0%} of sessions"
    return move_to(ledger, CANARY, candidate, before, why, "canary_start")


def running(ledger: Ledger) -> AliasRecord | None:
    """The ``canary`` alias while a canary runs: its latest move started one (an ended
    canary names the champion's pair of its time, which a later champion may not be)."""
    canary = ledger.get_alias(CANARY)
    if canary is None:
        return None
    history = ledger.alias_history(CANARY)
    return canary if history and history[-1].action == "canary_start" else None


def end(ledger: Ledger, *, by: str, reason: str) -> AliasRecord | None:
    """Move the ``canary`` alias onto the champion's pair (no canary); None if none runs.
    Ending a canary that already ended changes nothing."""
    canary, champion = running(ledger), ledger.get_alias(ALIAS)
    if canary is None or champion is None:
        return canary
    return ledger.move_alias(
        CANARY,
        champion.model.id,
        champion.index.id,
        moved_by=by,
        reason=reason,
        action="canary_end",
        run_id=canary.run_id,
    )


@dataclass(frozen=True)
class Evidence:
    """What the champion's and the canary's pairs served, as the online metric sees it."""

    champion: Arm
    challenger: Arm
    champion_pair: tuple[str, str]
    challenger_pair: tuple[str, str]


def served_folder(settings: Settings) -> Path:
    """Where the search service writes its deliveries by default (``<landing>/served``)."""
    return settings.landing_dir / "served"


def evidence(ledger: Ledger, served_folder: Path, policy: CanaryPolicy) -> Evidence:
    """Both arms of the running canary, from the delivery folders under ``served_folder``:
    the searches made since the canary started, so both arms cover the same period."""
    canary, champion = running(ledger), ledger.get_alias(ALIAS)
    if canary is None or champion is None or _pair(canary) == _pair(champion):
        raise CanaryError("no canary is running: the canary alias is not on a challenger pair")
    served = served_by_pair(served_folder, since=canary.updated_at)  # while it ran
    return Evidence(
        champion=arm_of("champion", served.get(_pair(champion), []), policy.metric),
        challenger=arm_of("challenger", served.get(_pair(canary), []), policy.metric),
        champion_pair=_pair(champion),
        challenger_pair=_pair(canary),
    )


def judge(found: Evidence, policy: CanaryPolicy) -> OnlineVerdict:
    """The online gate's verdict on the evidence, under the policy's ``canary`` block."""
    return compare(
        found.champion,
        found.challenger,
        metric=policy.metric,
        max_drop=policy.max_drop,
        confidence=policy.confidence,
        min_impressions=policy.min_impressions,
    )
