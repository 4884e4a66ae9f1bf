"""Weeks of one store: ``generate(..., week=N)`` continues week N-1 of the same seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shelfguard.data.generator import PRODUCT_COLUMNS, GenerateResult, generate, store_truth
from shelfguard.data.weeks import MAX_WEEK

PRODUCTS, SEED, SEARCHES = 400, 11, 900
GRADE = {"Exact": 2, "Partial": 1, "Irrelevant": 0}


def _tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


@pytest.fixture(scope="module")
def weeks(tmp_path_factory: pytest.TempPathFactory) -> dict[int, GenerateResult]:
    root = tmp_path_factory.mktemp("weeks")
    return {
        week: generate(root / f"week-{week}", PRODUCTS, SEED, searches=SEARCHES, week=week)
        for week in (1, 2, 3)
    }


def _catalog(result: GenerateResult) -> dict[str, dict[str, str]]:
    return {row["product_id"]: row for row in _tsv(result.files["product"])}


def _applied(catalog: dict[str, dict[str, str]], changes: Path) -> dict[str, dict[str, str]]:
    out = dict(catalog)
    for change in sorted(_tsv(changes), key=lambda c: (c["changed_at"], int(c["change_id"]))):
        if change["op"] == "delete":
            del out[change["product_id"]]
        else:
            out[change["product_id"]] = {c: change[c] for c in PRODUCT_COLUMNS}
    return out


def test_each_week_is_the_week_before_with_its_change_feed_applied(
    weeks: dict[int, GenerateResult],
) -> None:
    for week in (2, 3):
        before, after = weeks[week - 1], weeks[week]
        changes = _tsv(before.files["catalog_changes"])
        assert {c["op"] for c in changes} == {"upsert", "delete"}
        assert _catalog(after) == _applied(_catalog(before), before.files["catalog_changes"])
        # New products got new ids: none of them was ever listed before.
        added = set(_catalog(after)) - set(_catalog(before))
        assert added and min(map(int, added)) > max(map(int, _catalog(before)))


def test_no_search_session_or_change_id_repeats_an_earlier_week(
    weeks: dict[int, GenerateResult],
) -> None:
    seen: dict[str, set[str]] = {"search_id": set(), "session_id": set(), "change_id": set()}
    for week in (1, 2, 3):
        log = _tsv(weeks[week].files["search_log"])
        changes = _tsv(weeks[week].files["catalog_changes"])
        now = {
            "search_id": {r["search_id"] for r in log},
            "session_id": {r["session_id"] for r in log},
            "change_id": {c["change_id"] for c in changes},
        }
        for key, ids in now.items():
            assert ids and not ids & seen[key], (week, key)
            seen[key] |= ids
        # A week's searches come after the previous week's feed, on listed products only.
        listed = set(_catalog(weeks[week]))
        assert {r["product_id"] for r in log} <= listed
        if week > 1:
            last_change = max(
                c["changed_at"] for c in _tsv(weeks[week - 1].files["catalog_changes"])
            )
            assert min(r["searched_at"] for r in log) > last_change


def test_the_shoppers_and_the_golden_set_stay(weeks: dict[int, GenerateResult]) -> None:
    first, second = weeks[1], weeks[2]
    assert first.files["query"].read_bytes() == second.files["query"].read_bytes()
    users = {(r["user_id"], r["user_email"]) for r in _tsv(first.files["search_log"])}
    again = {(r["user_id"], r["user_email"]) for r in _tsv(second.files["search_log"])}
    # The same shoppers come back, each with the one e-mail they always had.
    assert {u for u, _ in again} & {u for u, _ in users}
    assert len(dict(users | again)) == len(users | again)
    # Earlier judgements stay with their ids, except those of deleted products; the new
    # ones are of new products only.
    listed = set(_catalog(second))
    before = {r["id"]: r for r in _tsv(first.files["label"])}
    after = {r["id"]: r for r in _tsv(second.files["label"])}
    kept = {i: r for i, r in before.items() if r["product_id"] in listed}
    assert {i: after[i] for i in kept} == kept
    assert set(before) - set(kept) == set(before) - set(after)
    new_products = set(_catalog(second)) - set(_catalog(first))
    assert {after[i]["product_id"] for i in set(after) - set(before)} <= new_products


def test_every_week_s_judgements_are_the_hidden_truth_s_grades(
    weeks: dict[int, GenerateResult],
) -> None:
    for week in (2, 3):
        truth = store_truth(PRODUCTS, SEED, SEARCHES, week=week)
        texts = {truth.text(q): q for q in range(len(truth.queries.texts))}
        golden = {r["query_id"]: texts[r["query"]] for r in _tsv(weeks[week].files["query"])}
        labels = _tsv(weeks[week].files["label"])
        assert labels
        for row in labels:
            grade = truth.grades(golden[row["query_id"]], [int(row["product_id"])])[0]
            assert grade == GRADE[row["label"]], row
        # The truth's complete judgements list only products of that week's catalog.
        listed = {int(p) for p in _catalog(weeks[week])}
        assert set(truth.judgements(0)) <= listed


def test_a_week_is_the_same_bytes_whenever_it_is_generated(
    weeks: dict[int, GenerateResult], tmp_path: Path
) -> None:
    again = generate(tmp_path / "again", PRODUCTS, SEED, searches=SEARCHES, week=3)
    for key, path in weeks[3].files.items():
        assert again.files[key].read_bytes() == path.read_bytes(), key
    one = generate(tmp_path / "one", PRODUCTS, SEED, searches=SEARCHES)
    assert one.files["product"].read_bytes() == weeks[1].files["product"].read_bytes()


@pytest.mark.parametrize(
    ("week", "defects", "message"),
    [
        (0, (), "week must be an integer from 1 to"),
        (MAX_WEEK + 1, (), "week must be an integer from 1 to"),
        (True, (), "week must be an integer"),
        (2, ("empty_names",), "defects are injected into week 1 only"),
    ],
)
def test_bad_weeks_are_refused(
    tmp_path: Path, week: int, defects: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, PRODUCTS, SEED, defects=defects, week=week)
    assert not any(tmp_path.iterdir())
