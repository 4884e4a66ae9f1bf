"""The position-based click model, shared by the search log and the simulated shoppers
of ``shelfguard.serving.shoppers`` (and the debiasing of ``shelfguard.model.online``)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from shelfguard.data.generator.catalog import IntArray

# Click model (position-based): P(click) = examination(position) * attractiveness(grade).
_EXAMINATION_POWER = 0.8
_ATTRACTIVENESS = np.array([0.04, 0.28, 0.75])
_P_CART_GIVEN_CLICK = np.array([0.01, 0.06, 0.22])
_P_PURCHASE_GIVEN_CART = np.array([0.05, 0.20, 0.45])


def examination(positions: int) -> npt.NDArray[np.float64]:
    """The click model's chance that a shopper looks at positions 1..``positions``."""
    return np.asarray(1.0 / np.arange(1, positions + 1) ** _EXAMINATION_POWER, dtype=np.float64)


def click_outcomes(
    grade: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """The position-based click model: clicked / added-to-cart / purchased flags for
    ranked results of hidden ``grade`` (0 Irrelevant, 1 Partial, 2 Exact), one row per
    search, column = position - 1. A shopper examines position p with probability
    ``p ** -0.8`` and clicks an examined result by its grade's attractiveness."""
    seen = examination(grade.shape[1])
    clicked = rng.random(grade.shape) < seen * _ATTRACTIVENESS[grade]
    carted = clicked & (rng.random(grade.shape) < _P_CART_GIVEN_CLICK[grade])
    purchased = carted & (rng.random(grade.shape) < _P_PURCHASE_GIVEN_CART[grade])
    return clicked.astype(np.int64), carted.astype(np.int64), purchased.astype(np.int64)
