"""The evaluation gate's rules on hand-written metrics: each rule blocks on its own."""

from __future__ import annotations

from typing import Any

import pytest

from shelfguard.gates import gate_status
from shelfguard.gates.evaluation import decide
from shelfguard.policy import EvaluationPolicy

POLICY = EvaluationPolicy(
    floors={"ndcg@10": 0.3, "mrr@10": 0.3},
    max_drop_vs_champion=0.01,
    slice_min_queries=8,
    max_slice_drop=0.05,
    first_run_must_beat=["base", "bm25"],
)


def model(
    ndcg: float, mrr: float = 0.5, slices: dict[str, tuple[int, float]] | None = None
) -> dict[str, Any]:
    return {
        "overall": {"ndcg@10": ndcg, "mrr@10": mrr, "recall@10": 0.5},
        "slices": {name: {"n_queries": n, "ndcg@10": v} for name, (n, v) in (slices or {}).items()},
    }


def failed(checks: list[dict[str, Any]]) -> list[str]:
    return [c["name"] for c in checks if c["status"] == "fail"]


def test_first_run_passes_only_when_beating_every_baseline() -> None:
    good = {"challenger": model(0.6), "base": model(0.5), "bm25": model(0.4)}
    assert gate_status(decide(good, POLICY)) == "pass"
    tie = {"challenger": model(0.6), "base": model(0.6), "bm25": model(0.4)}
    assert failed(decide(tie, POLICY)) == ["beats_base:ndcg@10"]
    worse = {"challenger": model(0.45), "base": model(0.5), "bm25": model(0.55)}
    assert failed(decide(worse, POLICY)) == ["beats_base:ndcg@10", "beats_bm25:ndcg@10"]


def test_unreachable_floor_blocks() -> None:
    strict = POLICY.model_copy(update={"floors": {"ndcg@10": 0.99}})
    checks = decide({"challenger": model(0.6), "base": model(0.5), "bm25": model(0.4)}, strict)
    assert failed(checks) == ["floor:ndcg@10"]
    assert gate_status(checks) == "fail"


def test_regression_against_the_champion_blocks() -> None:
    within = {
        "challenger": model(0.595),
        "champion": model(0.6),
        "base": model(0.7),
        "bm25": model(0.7),
    }
    assert gate_status(decide(within, POLICY)) == "pass", (
        "champion present: baselines no longer decide"
    )
    drop = {
        "challenger": model(0.55),
        "champion": model(0.6),
        "base": model(0.5),
        "bm25": model(0.4),
    }
    assert failed(decide(drop, POLICY)) == ["vs_champion:ndcg@10"]
    must_improve = POLICY.model_copy(update={"require_improvement": True})
    assert failed(decide(within, must_improve)) == ["vs_champion:ndcg@10"]


def test_slice_regression_blocks_naming_the_slice() -> None:
    slices_before = {"Sofas": (10, 0.7), "Area Rugs": (12, 0.6), "Lamps": (3, 0.9)}
    slices_after = {"Sofas": (10, 0.71), "Area Rugs": (12, 0.5), "Lamps": (3, 0.1)}
    models = {
        "challenger": model(0.65, slices=slices_after),
        "champion": model(0.64, slices=slices_before),
        "base": model(0.5),
        "bm25": model(0.4),
    }
    checks = decide(models, POLICY)
    assert failed(checks) == ["slice:Area Rugs"], "Lamps has too few golden queries to judge"
    (rugs,) = [c for c in checks if c["name"] == "slice:Area Rugs"]
    assert "12 golden queries" in rugs["comment"]


def test_missing_inputs_are_errors_not_passes() -> None:
    with pytest.raises(ValueError, match="no 'challenger'"):
        decide({"base": model(0.5)}, POLICY)
    with pytest.raises(ValueError, match="requires beating 'bm25'"):
        decide({"challenger": model(0.6), "base": model(0.5)}, POLICY)
    with pytest.raises(ValueError, match="floor on 'map@10'"):
        decide(
            {"challenger": model(0.6), "base": model(0.5), "bm25": model(0.4)},
            POLICY.model_copy(update={"floors": {"map@10": 0.1}}),
        )


def test_a_verdict_names_the_value_the_limit_and_where_the_limit_came_from() -> None:
    drop = {
        "challenger": model(0.5317, slices={"Sofas": (9, 0.40)}),
        "champion": model(0.55, slices={"Sofas": (9, 0.52)}),
        "base": model(0.5),
        "bm25": model(0.4),
    }
    messages = {c["name"]: c["message"] for c in decide(drop, POLICY)}
    assert messages["vs_champion:ndcg@10"] == (
        "ndcg@10 0.5317, needs >= 0.5400 (champion 0.5500 - 0.01)"
    )
    assert messages["slice:Sofas"] == (
        "ndcg@10 0.4000, needs >= 0.4700 (champion 0.5200 on this class)"
    )
    assert messages["floor:mrr@10"] == "mrr@10 0.5000, needs >= 0.3"
