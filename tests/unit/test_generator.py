"""The synthetic store generator: layout, determinism, hidden ground truth, defects."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from shelfguard.data import generator
from shelfguard.data.generator import (
    CHANGE_COLUMNS,
    DEFECTS,
    FILES,
    LABEL_COLUMNS,
    PRODUCT_COLUMNS,
    QUERY_COLUMNS,
    SEARCH_LOG_COLUMNS,
    GenerateResult,
    generate,
)

WANDS_QUERY_FIXTURE = Path(__file__).parents[1] / "fixtures" / "wands" / "query.csv"
PRODUCTS = 500
SEARCHES = 1500
COLUMNS = {
    "product": PRODUCT_COLUMNS,
    "query": QUERY_COLUMNS,
    "label": LABEL_COLUMNS,
    "search_log": SEARCH_LOG_COLUMNS,
    "catalog_changes": CHANGE_COLUMNS,
}

Rows = list[list[str]]


def read_rows(path: Path) -> tuple[list[str], Rows]:
    """Header and data rows of a clean file (strict UTF-8, no quoting, \\n endings)."""
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n")
    lines = text[:-1].split("\n")
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def raw_lines(path: Path) -> list[bytes]:
    """Data lines as bytes, for files that may hold invalid UTF-8."""
    return path.read_bytes().rstrip(b"\n").split(b"\n")[1:]


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    return generate(tmp_path_factory.mktemp("clean"), products=PRODUCTS, seed=7, searches=SEARCHES)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> GenerateResult:
    """The default search volume, as the fine-tuning demo sees it (at a smaller catalog)."""
    return generate(tmp_path_factory.mktemp("demo"), products=PRODUCTS, seed=11)


@pytest.fixture(scope="module")
def rows(clean: GenerateResult) -> dict[str, Rows]:
    return {key: read_rows(path)[1] for key, path in clean.files.items()}


# --- layout and determinism --------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", products=300, seed=3, searches=600, defects=["bad_utf8"])
    second = generate(tmp_path / "b", products=300, seed=3, searches=600, defects=["bad_utf8"])
    other = generate(tmp_path / "c", products=300, seed=4, searches=600, defects=["bad_utf8"])
    for key in FILES:
        assert first.files[key].read_bytes() == second.files[key].read_bytes(), key
        assert first.files[key].read_bytes() != other.files[key].read_bytes(), key


def test_result_lists_every_file_with_its_row_count(clean: GenerateResult) -> None:
    assert set(clean.files) == set(FILES)
    assert clean.defects == ()
    for key, name in FILES.items():
        assert clean.files[key] == clean.out_dir / name
        assert clean.rows[key] == len(raw_lines(clean.files[key]))
    assert clean.rows["product"] == PRODUCTS
    assert clean.rows["search_log"] == SEARCHES * 10
    assert not list(clean.out_dir.glob("*.partial"))


def test_headers_follow_the_wands_layout(clean: GenerateResult) -> None:
    for key, columns in COLUMNS.items():
        assert read_rows(clean.files[key])[0] == columns, key
    wands_header = WANDS_QUERY_FIXTURE.read_bytes().split(b"\n", 1)[0] + b"\n"
    assert clean.files["query"].read_bytes().startswith(wands_header)


def test_every_line_has_all_fields_and_no_stray_control_characters(
    clean: GenerateResult, rows: dict[str, Rows]
) -> None:
    for key, path in clean.files.items():
        assert b"\r" not in path.read_bytes(), key
        assert all(len(row) == len(COLUMNS[key]) for row in rows[key]), key


def test_product_values_are_well_formed(rows: dict[str, Rows]) -> None:
    ids = [int(row[0]) for row in rows["product"]]
    assert len(set(ids)) == len(ids)
    for row in rows["product"]:
        product = dict(zip(PRODUCT_COLUMNS, row, strict=True))
        assert product["product_name"]
        assert 2 <= len(product["category_hierarchy"].split(" / ")) <= 3
        features = dict(pair.split(":", 1) for pair in product["product_features"].split("|"))
        assert {"brand", "color", "material", "price"} <= set(features)
        assert float(features["price"]) > 0
        if product["rating_count"]:
            assert int(product["rating_count"]) >= 1
            assert 1.0 <= float(product["average_rating"]) <= 5.0
            assert 0 <= int(product["review_count"]) <= int(product["rating_count"])
        else:
            assert product["average_rating"] == product["review_count"] == ""


def test_catalog_has_at_least_twenty_classes_in_a_shallow_hierarchy(
    rows: dict[str, Rows],
) -> None:
    paths = {row[2]: row[3] for row in rows["product"]}
    assert len(paths) >= 20
    assert len({path.rsplit(" / ", 1)[0] for path in paths.values()}) >= 8


def test_text_is_data_survives_as_valid_utf8(rows: dict[str, Rows]) -> None:
    text = "\n".join(row[1] + " " + row[4] for row in rows["product"])
    for needle in ("'); DROP TABLE products;--", '=HYPERLINK("x")', "😍", "ספה", "أريكة"):
        assert needle in text


def test_search_log_is_a_plausible_funnel(rows: dict[str, Rows]) -> None:
    product_ids = {row[0] for row in rows["product"]}
    stamps = []
    for row in rows["search_log"]:
        event = dict(zip(SEARCH_LOG_COLUMNS, row, strict=True))
        assert re.fullmatch(r"u\d{6}", event["user_id"])
        assert re.fullmatch(r"[a-z]+\.[a-z]+\d+@example\.com", event["user_email"])
        assert event["product_id"] in product_ids
        assert 1 <= int(event["position"]) <= 10
        clicked, carted, bought = (int(event[k]) for k in SEARCH_LOG_COLUMNS[-3:])
        assert {clicked, carted, bought} <= {0, 1}
        assert clicked >= carted >= bought
        stamps.append(datetime.strptime(event["searched_at"], "%Y-%m-%dT%H:%M:%SZ"))
    assert max(stamps) - min(stamps) <= timedelta(days=28)
    searches = collections.defaultdict(list)
    for row in rows["search_log"]:
        searches[row[0]].append(row[6])
    assert all(len(set(shown)) == len(shown) == 10 for shown in searches.values())


def test_change_feed_updates_adds_and_deletes_about_one_percent(
    rows: dict[str, Rows],
) -> None:
    product_ids = {row[0] for row in rows["product"]}
    changes = rows["catalog_changes"]
    ops = collections.Counter(row[2] for row in changes)
    assert set(ops) == {"upsert", "delete"}
    assert 0.005 * PRODUCTS <= len(changes) <= 0.03 * PRODUCTS + 6
    deletes = [row for row in changes if row[2] == "delete"]
    assert all(row[3] in product_ids and not any(row[4:]) for row in deletes)
    upserts = [row for row in changes if row[2] == "upsert"]
    assert any(row[3] in product_ids for row in upserts)
    assert any(row[3] not in product_ids for row in upserts)
    assert all(all(row[3:6]) for row in upserts)
    assert [row[1] for row in changes] == sorted(row[1] for row in changes)


# --- the hidden ground truth --------------------------------------------------------------


def test_golden_queries_never_appear_in_the_search_log(rows: dict[str, Rows]) -> None:
    golden = {row[1] for row in rows["query"]}
    assert golden
    assert golden.isdisjoint(row[5] for row in rows["search_log"])


def test_every_golden_query_has_an_exact_match_among_a_mix_of_judgements(
    rows: dict[str, Rows],
) -> None:
    product_ids = {row[0] for row in rows["product"]}
    deleted = {row[3] for row in rows["catalog_changes"] if row[2] == "delete"}
    judged = collections.defaultdict(list)
    for _, query_id, product_id, label in rows["label"]:
        assert label in {"Exact", "Partial", "Irrelevant"}
        assert product_id in product_ids
        judged[query_id].append((product_id, label))
    assert set(judged) == {row[0] for row in rows["query"]}
    for judgements in judged.values():
        assert 15 <= len(judgements) <= 30
        assert any(label == "Exact" and pid not in deleted for pid, label in judgements)
    labels = collections.Counter(row[3] for row in rows["label"])
    assert labels["Partial"] > labels["Irrelevant"] > 0


def test_golden_judgements_follow_the_hidden_class(rows: dict[str, Rows]) -> None:
    product_class = {row[0]: row[2] for row in rows["product"]}
    query_class = {row[0]: row[2] for row in rows["query"]}
    for _, query_id, product_id, label in rows["label"]:
        if label == "Exact":
            assert product_class[product_id] == query_class[query_id]


def test_clicks_decrease_with_position(demo: GenerateResult) -> None:
    clicks = collections.defaultdict(list)
    for row in read_rows(demo.files["search_log"])[1]:
        clicks[int(row[7])].append(int(row[8]))
    rate = [sum(clicks[p]) / len(clicks[p]) for p in range(1, 11)]
    assert rate[0] > rate[2] > rate[5] > rate[9]
    assert sum(rate[:3]) > 3 * sum(rate[-3:])


def test_queries_rely_on_store_vocabulary_about_half_the_time(demo: GenerateResult) -> None:
    _, products = read_rows(demo.files["product"])
    vocabulary: set[str] = set()
    brands = set()
    for row in products:
        for value in row[1:6]:
            vocabulary.update(tokens(value))
        brands.add(row[5].split("|")[0].removeprefix("brand:").lower())

    def store_only(query: str) -> bool:
        unknown = any(token not in vocabulary for token in tokens(query))
        return unknown or any(brand in query for brand in brands)

    searched = {row[5] for row in read_rows(demo.files["search_log"])[1]}
    golden = [row[1] for row in read_rows(demo.files["query"])[1]]
    assert 0.40 <= sum(map(store_only, searched)) / len(searched) <= 0.65
    assert 0.35 <= sum(map(store_only, golden)) / len(golden) <= 0.75


def test_house_terms_never_appear_in_product_text(demo: GenerateResult) -> None:
    _, products = read_rows(demo.files["product"])
    text = " ".join(" ".join(row[1:6]) for row in products).lower()
    searched = " ".join({row[5] for row in read_rows(demo.files["search_log"])[1]})
    house_terms = [term for pc in generator._CLASSES for term in pc.house_terms]
    assert len(house_terms) >= 20
    for term in house_terms:
        assert not re.search(rf"\b{re.escape(term)}\b", text), term
    assert sum(term in searched for term in house_terms) >= 20


def test_popular_queries_come_from_many_users_and_the_tail_from_few(
    demo: GenerateResult,
) -> None:
    users = collections.defaultdict(set)
    clicked_pairs = set()
    for row in read_rows(demo.files["search_log"])[1]:
        users[row[5]].add(row[2])
        if row[8] == "1":
            clicked_pairs.add((row[5], row[6]))
    counts = sorted((len(u) for u in users.values()), reverse=True)
    assert counts[0] >= 50
    assert sum(c >= 5 for c in counts) >= 100
    assert sum(c < 5 for c in counts) >= 100
    assert len(clicked_pairs) >= 2000


# --- defects -------------------------------------------------------------------------------


def _share(hits: int, total: int) -> bool:
    """A defect must be present at a rate that clearly trips a 1% threshold."""
    return total > 0 and hits / total > 0.015


def _header(result: GenerateResult, key: str = "product") -> list[str]:
    return result.files[key].read_bytes().split(b"\n", 1)[0].decode().split("\t")


def _products(result: GenerateResult) -> list[dict[str, bytes]]:
    """product.csv rows by column name, whatever the header says; ragged rows skipped."""
    header = _header(result)
    fields = [line.split(b"\t") for line in raw_lines(result.files["product"])]
    return [dict(zip(header, row, strict=True)) for row in fields if len(row) == len(header)]


def has_duplicate_ids(result: GenerateResult) -> bool:
    """Repeated product_ids whose rows differ: a later version, not a copied line."""
    seen: dict[bytes, bytes] = {}
    changed = 0
    lines = raw_lines(result.files["product"])
    for line in lines:
        product_id = line.split(b"\t", 1)[0]
        changed += seen.get(product_id, line) != line
        seen[product_id] = line
    return _share(changed, len(lines))


def has_empty_names(result: GenerateResult) -> bool:
    products = _products(result)
    names = [product.get("product_name", product.get("product_title")) for product in products]
    return _share(names.count(b""), len(products))


def _is_number(value: bytes) -> bool:
    try:
        float(value.decode())
    except ValueError:
        return False
    return True


NUMBER_COLUMNS = ("rating_count", "average_rating", "review_count")


def has_bad_numbers(result: GenerateResult) -> bool:
    products = _products(result)
    bad = sum(any(p[c] and not _is_number(p[c]) for c in NUMBER_COLUMNS) for p in products)
    return _share(bad, len(products))


def has_out_of_range(result: GenerateResult) -> bool:
    products = _products(result)
    bad = 0
    for product in products:
        count, rating = product["rating_count"], product["average_rating"]
        bad += (_is_number(count) and float(count) < 0) or (
            _is_number(rating) and not 1.0 <= float(rating) <= 5.0
        )
    return _share(bad, len(products))


def has_missing_column(result: GenerateResult) -> bool:
    return "product_class" not in _header(result)


def has_renamed_column(result: GenerateResult) -> bool:
    header = _header(result)
    return "product_title" in header and "product_name" not in header


def has_extra_column(result: GenerateResult) -> bool:
    return _header(result)[-1] == "internal_notes"


def has_bad_utf8(result: GenerateResult) -> bool:
    lines = raw_lines(result.files["product"])
    bad = 0
    for line in lines:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return _share(bad, len(lines))


def has_ragged_rows(result: GenerateResult) -> bool:
    ragged = []
    for key in ("product", "search_log"):
        width = len(_header(result, key))
        lines = raw_lines(result.files[key])
        ragged.append(_share(sum(line.count(b"\t") + 1 != width for line in lines), len(lines)))
    return all(ragged)


def has_orphan_judgements(result: GenerateResult) -> bool:
    product_ids = {line.split(b"\t", 1)[0] for line in raw_lines(result.files["product"])}
    labels = read_rows(result.files["label"])[1]
    return _share(sum(row[2].encode() not in product_ids for row in labels), len(labels))


def has_golden_leak(result: GenerateResult) -> bool:
    golden = {row[1] for row in read_rows(result.files["query"])[1]}
    searches = {row[0]: row[5] for row in read_rows(result.files["search_log"])[1]}
    return _share(sum(query in golden for query in searches.values()), len(searches))


def has_category_shift(result: GenerateResult) -> bool:
    # The hierarchy's leaf names the class, and survives schema_missing.
    classes = collections.Counter(p["category_hierarchy"] for p in _products(result))
    return classes.most_common(1)[0][1] / sum(classes.values()) >= 0.4


DETECTORS: dict[str, Callable[[GenerateResult], bool]] = {
    "duplicate_ids": has_duplicate_ids,
    "empty_names": has_empty_names,
    "bad_numbers": has_bad_numbers,
    "out_of_range": has_out_of_range,
    "schema_missing": has_missing_column,
    "schema_renamed": has_renamed_column,
    "schema_extra": has_extra_column,
    "bad_utf8": has_bad_utf8,
    "ragged_rows": has_ragged_rows,
    "orphan_judgements": has_orphan_judgements,
    "golden_leak": has_golden_leak,
    "category_shift": has_category_shift,
}


def test_every_defect_has_a_detector() -> None:
    assert list(DETECTORS) == list(DEFECTS)
    assert all(description for description in DEFECTS.values())


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_defect_is_present_only_when_asked_for(
    defect: str, clean: GenerateResult, tmp_path: Path
) -> None:
    damaged = generate(tmp_path, products=PRODUCTS, seed=7, searches=SEARCHES, defects=[defect])
    assert damaged.defects == (defect,)
    assert DETECTORS[defect](damaged)
    assert not DETECTORS[defect](clean)


def test_leaked_golden_queries_survive_k_anonymity(tmp_path: Path) -> None:
    result = generate(tmp_path, products=PRODUCTS, searches=SEARCHES, defects=["golden_leak"])
    golden = {row[1] for row in read_rows(result.files["query"])[1]}
    users = collections.defaultdict(set)
    for row in read_rows(result.files["search_log"])[1]:
        if row[5] in golden:
            users[row[5]].add(row[2])
    assert users
    assert all(len(who) >= 5 for who in users.values())


def test_all_defects_combine(tmp_path: Path) -> None:
    result = generate(tmp_path, products=PRODUCTS, searches=SEARCHES, defects=list(DEFECTS)[::-1])
    assert result.defects == tuple(DEFECTS)
    assert all(detect(result) for detect in DETECTORS.values())
    assert result.rows["product"] > PRODUCTS


def test_defects_leave_the_other_files_untouched(clean: GenerateResult, tmp_path: Path) -> None:
    damaged = generate(
        tmp_path, products=PRODUCTS, seed=7, searches=SEARCHES, defects=["empty_names"]
    )
    for key in ("query", "label", "search_log", "catalog_changes"):
        assert damaged.files[key].read_bytes() == clean.files[key].read_bytes(), key


# --- arguments and progress ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"defects": ["no_such_defect"]}, r"no_such_defect.*known defects: duplicate_ids"),
        ({"defects": "golden_leak"}, r"defects must be a sequence"),
        ({"products": 49}, r"products must be at least 50"),
        ({"products": 120.5}, r"products must be an integer"),
        ({"seed": -1}, r"seed must be a non-negative integer"),
        ({"searches": 10}, r"searches must be None or an integer >= 100"),
    ],
)
def test_bad_arguments_are_rejected_by_name(
    kwargs: dict[str, object], message: str, tmp_path: Path
) -> None:
    arguments: dict[str, object] = {"products": 100, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(tmp_path, **arguments)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


def test_progress_reports_each_stage_to_completion(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    result = generate(
        tmp_path,
        products=25_000,
        searches=2_500,
        progress=lambda stage, done, total: calls.append((stage, done, total)),
    )
    stages = [stage for stage, _, _ in calls]
    assert set(stages) == set(FILES)
    assert stages.count("product") == 3
    assert ("product", 25_000, 25_000) in calls
    assert ("search_log", 25_000, 25_000) in calls
    assert all(0 < done <= total for _, done, total in calls)
    assert result.rows["search_log"] == 25_000


def test_default_search_volume_grows_with_the_catalog_and_is_capped() -> None:
    assert generator.default_searches(50) >= 3_000
    assert generator.default_searches(2_000) >= 3 * 2_000
    assert generator.default_searches(10_000_000) <= 250_000
