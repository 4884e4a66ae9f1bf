"""Simulated shoppers: the store's hidden ground truth, the click model, loopback only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shelfguard.data.generator import click_outcomes, examination, generate, store_truth
from shelfguard.serving.shoppers import SimulationError, check_loopback
from shelfguard_train.evaluate import ndcg_at_k

GRADE = {"Exact": 2, "Partial": 1, "Irrelevant": 0}


def _tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


def test_the_truth_is_the_one_the_generated_store_was_drawn_from(tmp_path: Path) -> None:
    store = generate(tmp_path, products=300, seed=7, searches=800).out_dir
    truth = store_truth(300, 7, 800)
    golden = {row["query"]: int(row["query_id"]) for row in _tsv(store / "query.csv")}
    texts = {truth.text(q): q for q in range(len(truth.queries.texts))}
    assert set(golden) <= set(texts)
    # Every judgement in label.csv is the truth's grade of that product for that query.
    by_id = {query_id: texts[text] for text, query_id in golden.items()}
    labels = _tsv(store / "label.csv")
    for row in labels:
        query = by_id[int(row["query_id"])]
        assert truth.grades(query, [int(row["product_id"])])[0] == GRADE[row["label"]], row
    # Shoppers search the training queries the log holds, never a golden one.
    logged = {row["query"] for row in _tsv(store / "search_log.csv")}
    training = {truth.text(q) for q in range(truth.training_queries)}
    assert logged <= training and not logged & set(golden)
    drawn = truth.sample_queries(np.random.default_rng(0), 500)
    assert drawn.max() < truth.training_queries


def test_the_judgements_are_complete_so_only_an_ideal_ranking_scores_one() -> None:
    truth = store_truth(300, 7, 800)
    query = 3
    listed = np.flatnonzero(~truth.deleted)
    best = listed[np.argsort(-truth.grades(query, listed.tolist()), kind="stable")][:10]
    judged = truth.judgements(query)
    assert judged and set(judged.values()) <= {1, 2}
    assert ndcg_at_k(best.tolist(), judged, 10) == pytest.approx(1.0)
    assert truth.grades(query, [10_000_000])[0] == 0  # not in the hidden catalog


def test_clicks_follow_position_and_grade() -> None:
    rng = np.random.default_rng(1)
    exact = np.full((20_000, 10), 2)
    irrelevant = np.zeros((20_000, 10), dtype=np.int64)
    clicked, carted, purchased = click_outcomes(exact, rng)
    rates = clicked.mean(axis=0)
    assert np.all(np.diff(rates) < 0.01)  # lower positions are examined less
    assert rates == pytest.approx(examination(10) * 0.75, abs=0.02)
    assert click_outcomes(irrelevant, rng)[0].mean() < clicked.mean() / 5
    assert np.all(carted <= clicked) and np.all(purchased <= carted)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost:9/", "http://[::1]:80"])
def test_loopback_services_are_accepted(url: str) -> None:
    assert check_loopback(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://10.1.2.3:8080", "must point at this machine"),
        ("ftp://127.0.0.1/", "must be http://HOST:PORT"),
        ("127.0.0.1:8080", "must be http://HOST:PORT"),
    ],
)
def test_other_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(SimulationError, match=reason):
        check_loopback(url)
