"""Golden-set evaluation: every model ranks the whole catalog for every golden query.

Metric definitions (judgement grades: Exact 2, Partial 1, Irrelevant 0; a product the
golden set does not judge counts as Irrelevant):

- ``ndcg@k``: DCG@k / IDCG@k with exponential gain ``2**grade - 1`` (Exact 3,
  Partial 1, Irrelevant 0) and discount ``1 / log2(rank + 1)``. IDCG@k is the DCG of
  the query's judged products in ideal order. Exponential gain makes an Exact worth
  three Partials, as a shopper who asked for "navy velvet sofa" would weigh them.
- ``recall@k``: share of the query's Exact products found in the top k. Only Exact
  counts as relevant: Partials (right class, wrong colour; or a sibling class) are
  substitutes, which nDCG already credits.
- ``mrr@k``: 1 / rank of the first Exact product within the top k, else 0.

A query without any Exact judgement is left out of recall and MRR, and one without any
Exact or Partial judgement out of nDCG (no ranking can score on them). Every report
carries ``n_queries``: the golden queries it covers.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from shelfguard_train.config import BM25_NAME, EvalConfig
from shelfguard_train.data import (
    GOLDEN_FILE,
    PRODUCTS_FILE,
    Judgement,
    read_golden,
    read_products,
)
from shelfguard_train.hashing import file_sha256
from shelfguard_train.model import Runtime, inference_runtime, model_sha256
from shelfguard_train.text_encoder import INT8, TextEncoder, open_encoder, resolve_precision

__all__ = [
    "EXACT",
    "EvalResult",
    "ModelReport",
    "RankingEvaluator",
    "bm25_rankings",
    "dense_rankings",
    "evaluate",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "top_k",
    "write_json",
]

log = logging.getLogger(__name__)

EXACT = 2
Rankings = Mapping[int, Sequence[int]]
Grades = Mapping[int, int]


def ndcg_at_k(ranking: Sequence[int], grades: Grades, k: int) -> float | None:
    """nDCG@k of one ranking (product ids, best first); None when no product has a gain."""
    ideal = _dcg(sorted(grades.values(), reverse=True)[:k])
    if ideal == 0:
        return None
    return _dcg([grades.get(product_id, 0) for product_id in ranking[:k]]) / ideal


def recall_at_k(ranking: Sequence[int], grades: Grades, k: int) -> float | None:
    """Share of the Exact products in the top k; None when the query has no Exact."""
    exact = {product_id for product_id, grade in grades.items() if grade >= EXACT}
    if not exact:
        return None
    return len(exact.intersection(ranking[:k])) / len(exact)


def mrr_at_k(ranking: Sequence[int], grades: Grades, k: int) -> float | None:
    """1 / rank of the first Exact product in the top k (0 if none); None without Exacts."""
    if not any(grade >= EXACT for grade in grades.values()):
        return None
    for rank, product_id in enumerate(ranking[:k], start=1):
        if grades.get(product_id, 0) >= EXACT:
            return 1.0 / rank
    return 0.0


def _dcg(grades: Sequence[int]) -> float:
    return sum((2.0**grade - 1) / math.log2(rank + 1) for rank, grade in enumerate(grades, 1))


_METRICS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "mrr": mrr_at_k}


class RankingEvaluator:
    """Scores rankings against graded judgements: a reusable ``rankings -> dict`` callable.

    ``judgements`` maps query id -> {product id: grade}. Calling the evaluator with
    ``rankings`` (query id -> product ids, best first) returns ``n_queries`` and, for
    every k in ``ks``, ``ndcg@k``, ``recall@k`` and ``mrr@k`` averaged over the queries
    where each is defined. A judged query missing from ``rankings`` counts as an empty
    ranking, so a ranker cannot score better by skipping hard queries.
    """

    def __init__(self, judgements: Mapping[int, Grades], ks: Sequence[int] = (10, 100)) -> None:
        if not ks or any(k < 1 for k in ks):
            raise ValueError(f"ks must be positive cut-offs, got {list(ks)}")
        self.judgements = judgements
        self.ks = tuple(sorted(set(ks)))

    @property
    def depth(self) -> int:
        """How many ranked products the evaluator needs per query."""
        return self.ks[-1]

    def per_query(self, rankings: Rankings) -> dict[int, dict[str, float | None]]:
        """Every metric for every judged query (None where a metric is undefined)."""
        out: dict[int, dict[str, float | None]] = {}
        for query_id, grades in self.judgements.items():
            ranking = rankings.get(query_id, ())
            out[query_id] = {
                f"{name}@{k}": metric(ranking, grades, k)
                for k in self.ks
                for name, metric in _METRICS.items()
            }
        return out

    def aggregate(self, values: Sequence[Mapping[str, float | None]]) -> dict[str, float]:
        """Mean of each metric over the queries where it is defined (0.0 if none is)."""
        report: dict[str, float] = {"n_queries": len(values)}
        for k in self.ks:
            for name in _METRICS:
                key = f"{name}@{k}"
                defined = [x for v in values if (x := v[key]) is not None]
                report[key] = float(np.mean(defined)) if defined else 0.0
        return report

    def __call__(self, rankings: Rankings) -> dict[str, float]:
        """Aggregate metrics of ``rankings`` over every judged query."""
        return self.aggregate(list(self.per_query(rankings).values()))


def top_k(scores: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.int64]:
    """Column indices of each row's k best scores, ties broken by lower index."""
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k].astype(np.int64)


def dense_rankings(
    encoder: TextEncoder,
    queries: Sequence[str],
    documents: Sequence[str],
    depth: int,
    batch_size: int = 64,
) -> npt.NDArray[np.int64]:
    """Document indices, best first, for each query: cosine on normalised embeddings.

    An int8 encoder encodes with its OpenVINO export; a torch one with
    ``SentenceTransformer.encode`` at its precision.
    """
    if encoder.int8 is not None:
        docs = encoder.encode(documents, batch_size)
        scores = encoder.encode(queries, batch_size) @ docs.T
        return top_k(scores, min(depth, len(documents)))
    model, runtime = encoder.model, encoder.runtime
    with runtime.autocast():
        docs = model.encode(
            list(documents),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        query_vectors = model.encode(
            list(queries),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
    scores = np.asarray(query_vectors, dtype=np.float32) @ np.asarray(docs, dtype=np.float32).T
    return top_k(scores, min(depth, len(documents)))


def bm25_rankings(
    queries: Sequence[str], documents: Sequence[str], depth: int
) -> npt.NDArray[np.int64]:
    """Document indices, best first, for each query under BM25 (bm25s, English stopwords)."""
    import bm25s

    corpus = bm25s.tokenize(list(documents), stopwords="en", return_ids=False, show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    tokenized = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
    scores = np.zeros((len(queries), len(documents)), dtype=np.float32)
    for row, tokens in enumerate(tokenized):
        # get_scores needs at least one token; a query of only stopwords scores 0 everywhere.
        if tokens:
            scores[row] = retriever.get_scores(list(tokens))
    return top_k(scores, min(depth, len(documents)))


@dataclass(frozen=True)
class ModelReport:
    """One ranker's metrics: overall and per golden ``query_class`` slice."""

    overall: dict[str, float]
    slices: dict[str, dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: ``{"overall": ..., "slices": ..., **info}``."""
        return {"overall": self.overall, "slices": self.slices, **self.info}


@dataclass(frozen=True)
class EvalResult:
    """What ``evaluate`` measured, per ranker, and which inputs it measured on."""

    models: dict[str, ModelReport]
    inputs: dict[str, Any]
    config_hash: str
    output_path: Path

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written to ``output_path``."""
        return {
            "models": {name: report.to_dict() for name, report in self.models.items()},
            "inputs": self.inputs,
            "config_hash": self.config_hash,
        }


@dataclass(frozen=True)
class _GoldenSet:
    query_ids: list[int]
    queries: list[str]
    classes: dict[int, str]
    grades: dict[int, dict[int, int]]


def _golden_set(judgements: Sequence[Judgement], catalog_ids: set[int]) -> _GoldenSet:
    unknown = sum(1 for j in judgements if j.product_id not in catalog_ids)
    if unknown:
        # No ranker can return a product outside the catalog; keeping these would only
        # lower every model's ideal-normalised score by the same unreachable amount.
        log.warning("skipping %d judgement(s) of products not in the catalog", unknown)
    grades: dict[int, dict[int, int]] = defaultdict(dict)
    texts: dict[int, str] = {}
    classes: dict[int, str] = {}
    for j in judgements:
        texts[j.query_id] = j.query
        classes[j.query_id] = j.query_class
        if j.product_id in catalog_ids:
            grades[j.query_id][j.product_id] = j.grade
    query_ids = sorted(texts)
    for query_id in query_ids:
        grades.setdefault(query_id, {})
    return _GoldenSet(
        query_ids=query_ids,
        queries=[texts[q] for q in query_ids],
        classes=classes,
        grades=dict(grades),
    )


def _report(
    evaluator: RankingEvaluator,
    golden: _GoldenSet,
    ranked: npt.NDArray[np.int64],
    product_ids: Sequence[int],
    info: dict[str, Any],
) -> ModelReport:
    rankings = {
        query_id: [product_ids[i] for i in row]
        for query_id, row in zip(golden.query_ids, ranked.tolist(), strict=True)
    }
    per_query = evaluator.per_query(rankings)
    by_class: dict[str, list[Mapping[str, float | None]]] = defaultdict(list)
    for query_id, values in per_query.items():
        by_class[golden.classes[query_id]].append(values)
    return ModelReport(
        overall=evaluator.aggregate(list(per_query.values())),
        slices={name: evaluator.aggregate(by_class[name]) for name in sorted(by_class)},
        info=info,
    )


def evaluate(config: EvalConfig) -> EvalResult:
    """Rank the whole catalog for every golden query with each model (and BM25).

    Writes ``{"models": {name: {"overall": {...}, "slices": {query_class: {...}}}}}``
    (plus the input hashes) to ``config.output_path`` and returns the same as an
    ``EvalResult``.
    """
    products = read_products(config.data_dir)
    golden = _golden_set(read_golden(config.data_dir), {p.product_id for p in products})
    evaluator = RankingEvaluator(golden.grades, config.ks)
    product_ids = [p.product_id for p in products]
    documents = [p.text for p in products]
    precision, fallback = (
        resolve_precision(config.precision, config.device) if config.models else ("fp32", None)
    )
    runtime = inference_runtime(config.device, precision) if config.models else Runtime("cpu")
    used = INT8 if precision == INT8 else runtime.precision
    log.info(
        "evaluating %d golden queries against %d products with %s",
        len(golden.query_ids),
        len(products),
        ", ".join([*config.models, *([BM25_NAME] if config.include_bm25 else [])]),
    )

    reports: dict[str, ModelReport] = {}
    for name, path in config.models.items():
        started = time.perf_counter()
        sha = model_sha256(path)
        # An int8 encoder is exported here from this catalog's texts: the same texts, in
        # the same order, the index's encoder is calibrated on, so the same bytes.
        encoder = open_encoder(
            path,
            precision,
            device=config.device,
            source_sha256=sha,
            encoder_dir=config.output_path.parent / f"{config.output_path.stem}.encoders" / name,
            calibration_texts=documents,
            fallback=fallback,
        )
        ranked = dense_rankings(
            encoder, golden.queries, documents, evaluator.depth, config.batch_size
        )
        info = {
            "kind": "dense",
            "model_path": str(path),
            "model_sha256": sha,
            "seconds": round(time.perf_counter() - started, 2),
        }
        if encoder.int8 is not None or fallback is not None:
            info["encoder"] = encoder.describe()
        reports[name] = _report(evaluator, golden, ranked, product_ids, info)
        _log_report(name, reports[name])
    if config.include_bm25:
        started = time.perf_counter()
        ranked = bm25_rankings(golden.queries, documents, evaluator.depth)
        info = {"kind": "bm25", "seconds": round(time.perf_counter() - started, 2)}
        reports[BM25_NAME] = _report(evaluator, golden, ranked, product_ids, info)
        _log_report(BM25_NAME, reports[BM25_NAME])

    result = EvalResult(
        models=reports,
        inputs={
            "golden_sha256": file_sha256(config.data_dir / GOLDEN_FILE),
            "products_sha256": file_sha256(config.data_dir / PRODUCTS_FILE),
            "golden_queries": len(golden.query_ids),
            "catalog_products": len(products),
            "ks": list(config.ks),
            "precision": used,
        },
        config_hash=config.config_hash(),
        output_path=config.output_path,
    )
    write_json(config.output_path, result.to_dict())
    return result


def _log_report(name: str, report: ModelReport) -> None:
    shown = ", ".join(f"{k}={v:.4f}" for k, v in report.overall.items() if k != "n_queries")
    log.info("%s: %s", name, shown)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename): readers never see half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(partial, path)
