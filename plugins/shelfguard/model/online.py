"""The online gate's arithmetic: how shoppers answered two pairs served side by side.

During a canary the search service answers a fixed share of sessions with the
challenger pair and the rest with the champion, and records which pair answered each
search. Clicks are biased by position (a shopper looks at position 1 far more often
than at position 8), so a raw click-through rate favours whatever sits on top. Both
metrics here undo that bias with the click model's own examination probabilities
(``generator.examination``: position p is looked at with probability ``p ** -0.8``):

``debiased_ctr``
    Clicks weighted by the inverse of their position's examination probability (an
    inverse-propensity estimate of how often a shown product is attractive), summed
    over the results of a search and divided by the number of results shown.
``click_ndcg``
    The same weighted clicks taken as graded relevance, scored as nDCG@k of the
    order the pair showed them in: 1 when the pair put every clicked product above
    every unclicked one; searches without a click count 0.

Because the weighting undoes position, ``debiased_ctr`` judges *which* products a pair
shows in its top k, not their order among themselves; ``click_ndcg`` judges the order.

The decision is a non-inferiority test, not a race: the challenger passes when, at the
policy's confidence level, it is *not worse* than the champion by more than
``max_drop``. The uncertainty comes from a bootstrap over sessions (a session's
searches are not independent of each other), resampled within each arm, with a fixed
seed so that the same evidence always gives the same verdict. With fewer impressions
than ``min_impressions`` in either arm the gate does not decide: it says so, and the
caller keeps waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator import examination

__all__ = [
    "METRICS",
    "Arm",
    "OnlineVerdict",
    "ServedSearch",
    "arm_of",
    "compare",
    "search_value",
]

Metric = Literal["debiased_ctr", "click_ndcg"]
METRICS: tuple[Metric, ...] = ("debiased_ctr", "click_ndcg")
GATE = "online"


@dataclass(frozen=True)
class ServedSearch:
    """One answered search: its session, and per position shown whether it was clicked."""

    session_id: str
    clicks: tuple[int, ...]  # 0/1 per position, position 1 first


def search_value(clicks: Sequence[int], metric: Metric) -> float:
    """The metric of one search (see the module's docstring)."""
    shown = len(clicks)
    if shown == 0:
        return 0.0
    seen = examination(shown)
    gains = np.asarray(clicks, dtype=np.float64) / seen
    if metric == "debiased_ctr":
        return float(gains.sum() / shown)
    if metric == "click_ndcg":
        if not gains.any():
            return 0.0
        discount = 1.0 / np.log2(np.arange(2, shown + 2))
        ideal = float((np.sort(gains)[::-1] * discount).sum())
        return float((gains * discount).sum() / ideal)
    raise ValueError(f"unknown online metric {metric!r}; known: {', '.join(METRICS)}")


@dataclass(frozen=True)
class Arm:
    """What one pair served: per session, the sum and count of its searches' values."""

    name: str
    sessions: int
    searches: int
    impressions: int
    clicks: int
    value: float  # the metric over all its searches
    session_sums: npt.NDArray[np.float64]
    session_counts: npt.NDArray[np.float64]


def arm_of(name: str, searches: Iterable[ServedSearch], metric: Metric) -> Arm:
    """Summarise the searches one pair answered."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    impressions = clicks = 0
    for search in searches:
        sums[search.session_id] = sums.get(search.session_id, 0.0) + search_value(
            search.clicks, metric
        )
        counts[search.session_id] = counts.get(search.session_id, 0) + 1
        impressions += len(search.clicks)
        clicks += sum(search.clicks)
    total = sum(counts.values())
    return Arm(
        name=name,
        sessions=len(counts),
        searches=total,
        impressions=impressions,
        clicks=clicks,
        value=(sum(sums.values()) / total) if total else 0.0,
        session_sums=np.fromiter(sums.values(), dtype=np.float64, count=len(sums)),
        session_counts=np.fromiter(counts.values(), dtype=np.float64, count=len(counts)),
    )


@dataclass(frozen=True)
class OnlineVerdict:
    """The online gate's decision on a challenger against the champion."""

    decided: bool  # False: not enough impressions yet
    passed: bool
    metric: str
    champion: float
    challenger: float
    difference: float  # challenger - champion
    lower: float  # one-sided lower confidence bound of the difference
    upper: float  # one-sided upper confidence bound of the difference
    confidence: float
    max_drop: float
    reason: str

    def checks(self, champion: Arm, challenger: Arm, min_impressions: int) -> list[dict[str, Any]]:
        """The gate's checks, in the shape every gate records."""
        enough = min(champion.impressions, challenger.impressions)
        return [
            {
                "name": "online.impressions",
                "status": "pass" if self.decided else "fail",
                "observed": {
                    "champion": champion.impressions,
                    "challenger": challenger.impressions,
                },
                "expected": f">= {min_impressions} per pair",
                "comment": f"the smaller arm has {enough} impressions",
            },
            {
                "name": f"online.{self.metric}",
                "status": "pass" if self.passed else "fail",
                "observed": {
                    "champion": round(self.champion, 6),
                    "challenger": round(self.challenger, 6),
                    "difference": round(self.difference, 6),
                    "lower_bound": round(self.lower, 6),
                },
                "expected": f"lower bound of challenger - champion >= -{self.max_drop} "
                f"at {self.confidence:.0%} confidence",
                "comment": self.reason,
            },
        ]


def _bootstrap_means(arm: Arm, rng: np.random.Generator, resamples: int) -> npt.NDArray[np.float64]:
    n = arm.sessions
    picks = rng.integers(n, size=(resamples, n))
    sums = arm.session_sums[picks].sum(axis=1)
    counts = arm.session_counts[picks].sum(axis=1)
    return np.asarray(sums / counts, dtype=np.float64)


def compare(
    champion: Arm,
    challenger: Arm,
    *,
    metric: Metric,
    max_drop: float,
    confidence: float,
    min_impressions: int,
    resamples: int = 4000,
    seed: int = 0,
) -> OnlineVerdict:
    """Decide whether ``challenger`` is not worse than ``champion`` by more than
    ``max_drop`` (absolute, in the metric's units), at ``confidence`` (one-sided)."""
    if not 0.5 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    verdict = partial(
        OnlineVerdict,
        metric=metric,
        champion=champion.value,
        challenger=challenger.value,
        difference=challenger.value - champion.value,
        confidence=confidence,
        max_drop=max_drop,
    )
    if min(champion.impressions, challenger.impressions) < min_impressions or not (
        champion.sessions and challenger.sessions
    ):
        return verdict(
            decided=False,
            passed=False,
            lower=float("-inf"),
            upper=float("inf"),
            reason=(
                f"not enough impressions yet: {champion.impressions} served by the champion, "
                f"{challenger.impressions} by the challenger, {min_impressions} needed from each"
            ),
        )
    rng = np.random.default_rng(seed)
    spread = _bootstrap_means(challenger, rng, resamples) - _bootstrap_means(
        champion, rng, resamples
    )
    lower = float(np.quantile(spread, 1.0 - confidence))
    upper = float(np.quantile(spread, confidence))
    passed = lower >= -max_drop
    observed = (
        f"the challenger's {metric} is {challenger.value:.4f} against the champion's "
        f"{champion.value:.4f}"
    )
    if passed:
        reason = (
            f"{observed}; with {confidence:.0%} confidence it is at most "
            f"{max(0.0, -lower):.4f} worse, within the {max_drop} allowed"
        )
    else:
        reason = (
            f"{observed}; it may be up to {-lower:.4f} worse at {confidence:.0%} "
            f"confidence, more than the {max_drop} allowed"
        )
    return verdict(decided=True, passed=passed, lower=lower, upper=upper, reason=reason)
