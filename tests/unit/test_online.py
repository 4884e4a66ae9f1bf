"""The online gate's metrics and its non-inferiority test, on the generator's click model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from shelfguard.data.generator import click_outcomes, examination
from shelfguard.model.online import Arm, ServedSearch, arm_of, compare, search_value


def test_a_click_counts_more_the_less_its_position_is_looked_at() -> None:
    top = search_value([1, 0, 0, 0, 0, 0, 0, 0, 0, 0], "debiased_ctr")
    fifth = search_value([0, 0, 0, 0, 1, 0, 0, 0, 0, 0], "debiased_ctr")
    assert top == pytest.approx(0.1)
    assert fifth == pytest.approx(1 / examination(5)[4] / 10)
    assert search_value([0] * 10, "debiased_ctr") == 0.0
    # nDCG of the clicks: 1 when the clicked result is on top, less further down.
    assert search_value([1, 0, 0], "click_ndcg") == pytest.approx(1.0)
    assert search_value([0, 0, 0, 0, 1], "click_ndcg") == pytest.approx(1 / math.log2(6))
    assert search_value([0, 0, 0], "click_ndcg") == 0.0
    with pytest.raises(ValueError, match="unknown online metric"):
        search_value([1], "ctr")  # type: ignore[arg-type]


def _shoppers(grades: np.ndarray, sessions: int, seed: int) -> list[ServedSearch]:
    """Searches of ``sessions`` sessions (1-3 searches each) that see results of these
    hidden grades in this order, clicking by the generator's click model."""
    rng = np.random.default_rng(seed)
    per_session = rng.integers(1, 4, size=sessions)
    rows = np.repeat(grades[None, :], int(per_session.sum()), axis=0)
    clicked, _, _ = click_outcomes(rows, rng)
    owners = np.repeat(np.arange(sessions), per_session)
    return [
        ServedSearch(f"s{owner}-{seed}", tuple(int(c) for c in row))
        for owner, row in zip(owners.tolist(), clicked.tolist(), strict=True)
    ]


GOOD = np.array([2, 2, 1, 1, 0, 0, 0, 0, 0, 0])  # relevant results on top
FEWER = np.array([2, 1, 0, 1, 0, 0, 0, 0, 0, 0])  # fewer relevant results shown
REVERSED = GOOD[::-1].copy()  # the same results, relevant ones at the bottom


@pytest.mark.parametrize(
    ("metric", "worse_grades"), [("debiased_ctr", FEWER), ("click_ndcg", REVERSED)]
)
def test_a_worse_ranking_is_blocked_and_an_equal_one_passes(
    metric: str, worse_grades: np.ndarray
) -> None:
    champion = arm_of("champion", _shoppers(GOOD, 3000, seed=1), metric)  # type: ignore[arg-type]
    worse = arm_of("challenger", _shoppers(worse_grades, 3000, seed=2), metric)  # type: ignore[arg-type]
    same = arm_of("challenger", _shoppers(GOOD, 3000, seed=3), metric)  # type: ignore[arg-type]
    policy = {"max_drop": 0.01, "confidence": 0.95, "min_impressions": 1000}
    lost = compare(champion, worse, metric=metric, **policy)  # type: ignore[arg-type]
    assert lost.decided and not lost.passed
    assert lost.challenger < lost.champion and lost.upper < 0
    assert "more than the 0.01 allowed" in lost.reason
    held = compare(champion, same, metric=metric, **policy)  # type: ignore[arg-type]
    assert held.decided and held.passed, held.reason
    assert held.lower <= held.difference <= held.upper
    checks = held.checks(champion, same, 1000)
    assert [c["status"] for c in checks] == ["pass", "pass"]
    # The same evidence always gives the same verdict.
    assert compare(champion, same, metric=metric, **policy) == held  # type: ignore[arg-type]


def test_debiased_ctr_judges_what_is_shown_and_click_ndcg_the_order() -> None:
    """Undoing the position bias makes the CTR blind to order within the top ten: the
    same products reversed score alike. click_ndcg is what sees the order."""
    good = _shoppers(GOOD, 3000, seed=1)
    reversed_ = _shoppers(REVERSED, 3000, seed=2)
    ctr = [arm_of(n, s, "debiased_ctr").value for n, s in (("a", good), ("b", reversed_))]
    ndcg = [arm_of(n, s, "click_ndcg").value for n, s in (("a", good), ("b", reversed_))]
    assert ctr[1] == pytest.approx(ctr[0], rel=0.05)
    assert ndcg[1] < ndcg[0] - 0.2


def test_the_gate_waits_for_enough_impressions_and_fails_closed() -> None:
    champion = arm_of("champion", _shoppers(GOOD, 3000, seed=1), "debiased_ctr")
    few = arm_of("challenger", _shoppers(GOOD, 20, seed=4), "debiased_ctr")
    verdict = compare(
        champion, few, metric="debiased_ctr", max_drop=0.01, confidence=0.95, min_impressions=1000
    )
    assert (verdict.decided, verdict.passed) == (False, False)
    assert f"{few.impressions} by the challenger, 1000 needed" in verdict.reason
    assert verdict.checks(champion, few, 1000)[0]["status"] == "fail"
    empty = arm_of("challenger", [], "debiased_ctr")
    assert isinstance(empty, Arm) and empty.searches == 0
    assert not compare(
        champion, empty, metric="debiased_ctr", max_drop=1.0, confidence=0.9, min_impressions=0
    ).decided
    with pytest.raises(ValueError, match="confidence"):
        compare(
            champion, few, metric="debiased_ctr", max_drop=0.1, confidence=1.0, min_impressions=0
        )
