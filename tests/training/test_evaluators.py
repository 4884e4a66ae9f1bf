"""Golden-set metrics on hand-computed rankings, and evaluate() end to end on tiny data."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shelfguard_train.config import EvalConfig
from shelfguard_train.evaluate import (
    RankingEvaluator,
    bm25_rankings,
    evaluate,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    top_k,
)
from shelfguard_train.model import model_sha256

# Products 1 and 4 are Exact, 2 Partial, 3 Irrelevant; 5 is unjudged (counts as 0).
GRADES = {1: 2, 2: 1, 3: 0, 4: 2}
RANKING = [3, 1, 5, 2, 4]


def test_ndcg_uses_exponential_gain_and_the_judged_ideal() -> None:
    # DCG@3: only product 1 (gain 2**2 - 1 = 3) at rank 2 -> 3 / log2(3).
    # IDCG@3: grades 2, 2, 1 in ideal order -> 3/1 + 3/log2(3) + 1/log2(4).
    expected = (3 / math.log2(3)) / (3 + 3 / math.log2(3) + 1 / 2)
    assert ndcg_at_k(RANKING, GRADES, 3) == pytest.approx(expected)
    assert ndcg_at_k(RANKING, GRADES, 3) == pytest.approx(0.3509852, abs=1e-7)
    assert ndcg_at_k([1, 4, 2], GRADES, 3) == pytest.approx(1.0)
    assert ndcg_at_k([], GRADES, 10) == 0.0
    assert ndcg_at_k([1], {1: 0, 2: 0}, 10) is None


def test_recall_counts_exact_only() -> None:
    assert recall_at_k(RANKING, GRADES, 3) == 0.5
    assert recall_at_k(RANKING, GRADES, 5) == 1.0
    assert recall_at_k([2], GRADES, 1) == 0.0  # a Partial is not recalled
    assert recall_at_k([2], {2: 1}, 10) is None


def test_mrr_is_the_first_exact() -> None:
    assert mrr_at_k(RANKING, GRADES, 3) == 0.5
    assert mrr_at_k(RANKING, GRADES, 1) == 0.0
    assert mrr_at_k([4, 1], GRADES, 10) == 1.0
    assert mrr_at_k([2], {2: 1}, 10) is None


def test_evaluator_averages_where_defined_and_penalises_missing_rankings() -> None:
    evaluator = RankingEvaluator({10: GRADES, 20: {7: 1}, 30: {8: 2}}, ks=[3])
    report = evaluator({10: RANKING, 20: [7]})  # query 30 is not ranked at all
    ndcg_10 = (3 / math.log2(3)) / (3 + 3 / math.log2(3) + 1 / 2)
    assert report == pytest.approx(
        {
            "n_queries": 3,
            "ndcg@3": (ndcg_10 + 1.0 + 0.0) / 3,
            # Query 20 has no Exact: left out of recall and MRR.
            "recall@3": (0.5 + 0.0) / 2,
            "mrr@3": (0.5 + 0.0) / 2,
        }
    )
    assert evaluator.depth == 3
    assert evaluator.aggregate([]) == {"n_queries": 0, "ndcg@3": 0.0, "recall@3": 0.0, "mrr@3": 0.0}


def test_top_k_breaks_ties_by_catalog_order() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [[1, 0, 2], [0, 1, 2]]


def test_bm25_ranks_term_matches_first_and_survives_stopword_queries() -> None:
    documents = ["oak dining table", "grey velvet sofa", "black metal bar stool"]
    ranked = bm25_rankings(["velvet sofa", "the", "stool"], documents, depth=2)
    assert ranked.tolist() == [[1, 0], [0, 1], [2, 0]]


def _run(tmp_path: Path, data_dir: Path, tiny_model: Path) -> dict[str, object]:
    output = tmp_path / "reports" / "eval.json"
    result = evaluate(
        EvalConfig(
            data_dir=data_dir,
            models={"challenger": tiny_model, "base": tiny_model},
            output_path=output,
            ks=(5, 10),
            device="cpu",
        )
    )
    written = json.loads(output.read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    return written


def test_evaluate_reports_models_bm25_and_counted_slices(
    tmp_path: Path, tiny_data: Path, tiny_model: Path
) -> None:
    report = _run(tmp_path, tiny_data, tiny_model)
    models = report["models"]
    assert isinstance(models, dict)
    assert set(models) == {"challenger", "base", "bm25"}
    golden = pq.read_table(tiny_data / "golden.parquet").to_pylist()
    classes = Counter({r["query_id"]: r["query_class"] for r in golden}.values())
    for name, entry in models.items():
        overall, slices = entry["overall"], entry["slices"]
        assert overall["n_queries"] == sum(classes.values())
        assert {cls: s["n_queries"] for cls, s in slices.items()} == dict(classes), name
        for metrics in (overall, *slices.values()):
            assert set(metrics) == {
                "n_queries",
                "ndcg@5",
                "recall@5",
                "mrr@5",
                "ndcg@10",
                "recall@10",
                "mrr@10",
            }
            assert all(0.0 <= v <= 1.0 for k, v in metrics.items() if k != "n_queries")
    # The same model under two names scores the same; its hash binds the report to it.
    assert models["challenger"]["overall"] == models["base"]["overall"]
    assert models["challenger"]["model_sha256"] == model_sha256(tiny_model)
    assert models["bm25"]["kind"] == "bm25"
    # BM25 on store text is a real baseline: it must find something.
    assert models["bm25"]["overall"]["ndcg@10"] > 0.1
    assert report["inputs"]["golden_queries"] == sum(classes.values())


def test_judgements_of_unknown_products_are_skipped(
    tmp_path: Path, tiny_data: Path, tiny_model: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    golden = pq.read_table(data / "golden.parquet")
    first = golden.slice(0, 1).to_pylist()[0]
    ghost = pa.Table.from_pylist([{**first, "product_id": 10**9, "grade": 2}], schema=golden.schema)
    pq.write_table(pa.concat_tables([golden, ghost]), data / "golden.parquet")
    with_ghost = _run(tmp_path / "a", data, tiny_model)["models"]
    clean = _run(tmp_path / "b", tiny_data, tiny_model)["models"]
    assert isinstance(with_ghost, dict) and isinstance(clean, dict)
    for name in clean:
        assert with_ghost[name]["overall"] == clean[name]["overall"]
