"""The index gate's decision from the embedding entry point's measurements and the policy."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shelfguard.gates.index import decide
from shelfguard.policy import IndexPolicy

MODEL = "a" * 64
POLICY = IndexPolicy(min_ann_recall_at_10=0.95, min_canary_hit_rate=0.6)


def healthy() -> dict[str, Any]:
    none = {"count": 0, "ids": []}
    return {
        "coverage": {
            "active": 100,
            "indexed": 100,
            "missing": dict(none),
            "stale": dict(none),
            "duplicates": dict(none),
            "hash_mismatch": dict(none),
        },
        "vectors": {
            "dim": 384,
            "expected_dim": 384,
            "norm_min": 0.9999,
            "norm_max": 1.0001,
            "non_finite": 0,
        },
        "model": {"manifest_sha256": MODEL, "actual_sha256": MODEL, "matches": True},
        "ann": {"recall@10": 0.99, "sample_size": 100},
        "canary": {"queries": 20, "hits": 15, "hit_rate": 0.75, "misses": []},
    }


def failed(checks: dict[str, Any], model: str = MODEL) -> list[str]:
    return [c["name"] for c in decide(checks, model, POLICY) if c["status"] == "fail"]


def test_a_healthy_index_passes_every_check() -> None:
    checks = decide(healthy(), MODEL, POLICY)
    assert {c["status"] for c in checks} == {"pass"}
    assert len(checks) == 10


@pytest.mark.parametrize(
    ("path", "value", "check"),
    [
        (("coverage", "missing"), {"count": 2, "ids": [7, 9]}, "index.coverage.missing"),
        (("coverage", "stale"), {"count": 1, "ids": [3]}, "index.coverage.stale"),
        (("coverage", "duplicates"), {"count": 1, "ids": [3]}, "index.coverage.duplicates"),
        (("coverage", "hash_mismatch"), {"count": 4, "ids": [1]}, "index.coverage.hash_mismatch"),
        (("vectors", "dim"), 128, "index.vectors.dim"),
        (("vectors", "non_finite"), 3, "index.vectors.finite"),
        (("vectors", "norm_min"), 0.5, "index.vectors.unit_norm"),
        (("model", "matches"), False, "index.model_sha256"),
        (("ann", "recall@10"), 0.80, "index.ann_recall@10"),
        (("canary", "hit_rate"), 0.10, "index.canary_hit_rate"),
    ],
)
def test_each_defect_fails_its_own_check(path: tuple[str, str], value: Any, check: str) -> None:
    checks = copy.deepcopy(healthy())
    checks[path[0]][path[1]] = value
    assert failed(checks) == [check]


def test_an_index_built_by_another_model_fails() -> None:
    assert failed(healthy(), model="b" * 64) == ["index.model_sha256"]


def test_no_canary_queries_fails_unless_the_policy_asks_none() -> None:
    checks = healthy()
    checks["canary"] = {"skipped": "no golden set"}
    assert failed(checks) == ["index.canary_hit_rate"]
    lenient = IndexPolicy(min_ann_recall_at_10=0.95, min_canary_hit_rate=0.0)
    assert all(c["status"] == "pass" for c in decide(checks, MODEL, lenient))


def test_missing_ids_are_named_in_the_observation() -> None:
    checks = healthy()
    checks["coverage"]["missing"] = {"count": 2, "ids": [7, 9]}
    (missing,) = [c for c in decide(checks, MODEL, POLICY) if c["name"] == "index.coverage.missing"]
    assert missing["observed"] == "2 (e.g. 7, 9)"


ENCODER = "e" * 64


def int8_checks() -> dict[str, Any]:
    checks = healthy()
    checks["encoder"] = {
        "backend": "openvino",
        "precision": "int8",
        "fallback": None,
        "manifest_sha256": "f" * 64,
        "actual_sha256": "f" * 64,
        "sha256": ENCODER,
        "source_model_sha256": MODEL,
        "matches": True,
    }
    return checks


def test_an_int8_index_with_its_own_encoder_and_evaluation_passes() -> None:
    decided = decide(int8_checks(), MODEL, POLICY, {"precision": "int8", "sha256": ENCODER})
    assert {c["status"] for c in decided} == {"pass"}
    assert [c["name"] for c in decided][-2:] == ["index.encoder", "index.encoder_evaluated"]


def test_an_int8_encoder_altered_or_exported_from_another_model_fails() -> None:
    altered = int8_checks()
    altered["encoder"].update(matches=False, error="the int8 encoder's files hash to 00")
    assert failed(altered) == ["index.encoder"]
    foreign = int8_checks()
    foreign["encoder"]["source_model_sha256"] = "b" * 64
    assert failed(foreign) == ["index.encoder"]


@pytest.mark.parametrize(
    "evaluated",
    [
        {"precision": "int8", "sha256": "d" * 64},  # another export than the one judged
        {"precision": "bf16", "sha256": None},  # judged in another precision
    ],
)
def test_an_index_not_encoding_as_the_evaluation_did_fails(evaluated: dict[str, Any]) -> None:
    decided = decide(int8_checks(), MODEL, POLICY, evaluated)
    assert [c["name"] for c in decided if c["status"] == "fail"] == ["index.encoder_evaluated"]


def test_a_torch_index_judged_in_its_own_precision_passes() -> None:
    checks = healthy()
    checks["encoder"] = {"backend": "torch", "precision": "bf16", "matches": True}
    decided = decide(checks, MODEL, POLICY, {"precision": "bf16", "sha256": None})
    assert {c["status"] for c in decided} == {"pass"}
    assert failed_with(checks, {"precision": "fp32", "sha256": None}) == ["index.encoder_evaluated"]


def failed_with(checks: dict[str, Any], evaluated: dict[str, Any]) -> list[str]:
    return [c["name"] for c in decide(checks, MODEL, POLICY, evaluated) if c["status"] == "fail"]
