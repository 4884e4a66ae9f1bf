"""The suite files: they load, build real GX suites, follow the policy, and fail loudly when bad."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from shelfguard.config import project_root
from shelfguard.gates import RAW_SUITES, TRAINING_SUITES, GateOutcome
from shelfguard.gates.common import gate_suites
from shelfguard.policy import Policy, SuiteGate, load_policy, parse_policy
from shelfguard.quality import (
    RowScope,
    SuiteError,
    build_suite,
    default_suites_dir,
    load_suite,
    suites_of,
)
from shelfguard.quality.suites import GATE_OF_SCHEMA

SUITE_FILES = sorted(path.stem for path in default_suites_dir().glob("*.yml"))


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy()


def with_raw_limits(policy: Policy, **limits: float) -> Policy:
    return policy.model_copy(update={"raw_data": policy.raw_data.model_copy(update=limits)})


def test_every_suite_a_gate_runs_has_its_file() -> None:
    assert set(RAW_SUITES) | set(TRAINING_SUITES) <= set(SUITE_FILES)


@pytest.mark.parametrize("name", SUITE_FILES)
def test_suite_builds_into_gx_with_ids_severities_and_comments(name: str, policy: Policy) -> None:
    spec = load_suite(name, policy, RowScope(column="_file_sha256", partitions={}))
    suite = build_suite(spec)

    assert suite.name == name
    assert [e.meta["shelfguard_id"] for e in suite.expectations] == [
        e.id for e in spec.expectations
    ]
    for entry, expectation in zip(spec.expectations, suite.expectations, strict=True):
        assert entry.severity in ("error", "warn")
        assert len(entry.comment) > 20, f"{name}.{entry.id} needs a comment naming the failure"
        assert expectation.notes == entry.comment
        assert "{{" not in str(entry.kwargs), f"{name}.{entry.id} left a template unrendered"


def test_thresholds_are_read_from_the_policy(policy: Policy) -> None:
    strict = with_raw_limits(policy, max_duplicate_id_share=0.0, max_orphan_judgement_share=0.2)

    default_spec = {e.id: e for e in load_suite("raw_products", policy).expectations}
    strict_spec = {e.id: e for e in load_suite("raw_products", strict).expectations}
    judgements = {e.id: e for e in load_suite("raw_judgements", strict).expectations}
    pairs = {e.id: e for e in load_suite("training_pairs", policy).expectations}

    assert default_spec["product_id_unique"].kwargs["mostly"] == pytest.approx(
        1 - policy.raw_data.max_duplicate_id_share
    )
    assert strict_spec["product_id_unique"].kwargs["mostly"] == 1.0
    assert "> 0.2 * count(*)" in judgements["product_id_known"].kwargs["unexpected_rows_query"]
    split_sql = pairs["min_pairs_per_split"].kwargs["unexpected_rows_query"]
    for split, minimum in policy.training_data.min_pairs_per_split.items():
        assert f"select '{split}' as split, {minimum} as min_pairs" in split_sql
    k_sql = pairs["k_anonymity"].kwargs["unexpected_rows_query"]
    assert f"n_users >= {policy.privacy.k_anonymity}" in k_sql


def test_policy_severity_overrides_what_the_file_says(policy: Policy) -> None:
    relaxed = policy.model_copy(update={"severities": {"raw_products.product_id_unique": "warn"}})

    spec = {e.id: e for e in load_suite("raw_products", relaxed).expectations}

    assert spec["product_id_unique"].severity == "warn"
    assert spec["product_name_present"].severity == "error"


def test_rows_of_other_tables_are_scoped_to_the_batch(policy: Policy) -> None:
    scope = RowScope(column="_file_sha256", partitions={"raw.products": "abc"})

    spec = {e.id: e for e in load_suite("raw_judgements", policy, scope).expectations}

    sql = spec["product_id_known"].kwargs["unexpected_rows_query"]
    assert "(select * from raw.products where _file_sha256 = 'abc')" in sql
    # The batch loaded no change feed: none of its rows count as known products.
    assert "(select * from raw.catalog_changes where false)" in sql


GOOD_ENTRY = """\
  # products without an id: rows nobody can join
  - id: product_id_present
    type: expect_column_values_to_not_be_null
    severity: error
    kwargs: {column: product_id}
"""


def suite_file(folder: Path, second_entry: str, *, header: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "raw_products.yml"
    path.write_text(
        header
        + "suite: raw_products\ntable: raw.products\nexpectations:\n"
        + GOOD_ENTRY
        + second_entry,
        encoding="utf-8",
    )
    return path


BAD_ENTRIES = {
    "no comment": (
        "  - id: name_present\n    type: expect_column_values_to_not_be_null\n"
        "    severity: error\n    kwargs: {column: product_name}\n",
        "needs a '# ...' comment",
    ),
    "bad severity": (
        "  # names: empty\n  - id: name_present\n    type: expect_column_values_to_not_be_null\n"
        "    severity: fatal\n    kwargs: {column: product_name}\n",
        "'severity' must be one of error, warn",
    ),
    "unknown policy key": (
        "  # names: empty\n  - id: name_present\n    type: expect_column_values_to_not_be_null\n"
        "    severity: error\n    kwargs:\n      column: product_name\n"
        '      mostly: "{{ 1 - policy.raw_data.max_empty_share }}"\n',
        "max_empty_share",
    ),
    "duplicate id": (
        "  # ids: again\n  - id: product_id_present\n    type: expect_column_values_to_not_be_null\n"
        "    severity: error\n    kwargs: {column: product_id}\n",
        "is used twice",
    ),
    "join in sql": (
        "  # orphans: unknown\n  - id: product_known\n    type: unexpected_rows_expectation\n"
        "    severity: error\n    kwargs:\n      unexpected_rows_query: >\n"
        "        select * from (select * from {batch}) as p join raw.queries as q on true\n",
        "without JOIN",
    ),
    "sql ignoring the batch": (
        "  # orphans: unknown\n  - id: product_known\n    type: unexpected_rows_expectation\n"
        "    severity: error\n    kwargs:\n      unexpected_rows_query: select * from raw.products\n",
        "{batch}",
    ),
    "unknown key": (
        "  # names: empty\n  - id: name_present\n    type: expect_column_values_to_not_be_null\n"
        "    severity: error\n    mostly: 0.5\n    kwargs: {column: product_name}\n",
        "unknown key(s) mostly",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_bad_entry_is_reported_with_the_file_and_the_entry(
    case: str, tmp_path: Path, policy: Policy
) -> None:
    entry, fragment = BAD_ENTRIES[case]
    path = suite_file(tmp_path, entry)

    with pytest.raises(SuiteError) as caught:
        load_suite("raw_products", policy, suites_dir=tmp_path)

    message = str(caught.value)
    assert str(path) in message
    assert "expectation #2" in message
    assert fragment in message


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (
            "  # names: empty\n  - id: name_present\n    type: expect_column_values_to_be_nice\n"
            "    severity: error\n    kwargs: {column: product_name}\n",
            "unknown GX expectation type 'expect_column_values_to_be_nice'",
        ),
        (
            "  # names: empty\n  - id: name_present\n    type: expect_column_values_to_not_be_null\n"
            "    severity: error\n    kwargs: {column: product_name, mostly: 7}\n",
            "invalid kwargs for expect_column_values_to_not_be_null",
        ),
    ],
)
def test_gx_rejections_name_the_file_and_the_entry(
    entry: str, fragment: str, tmp_path: Path, policy: Policy
) -> None:
    path = suite_file(tmp_path, entry)
    spec = load_suite("raw_products", policy, suites_dir=tmp_path)

    with pytest.raises(SuiteError) as caught:
        build_suite(spec)

    assert f"{path}: expectation #2 (name_present)" in str(caught.value)
    assert fragment in str(caught.value)


def test_a_file_named_for_another_suite_is_refused(tmp_path: Path, policy: Policy) -> None:
    path = suite_file(tmp_path, "", header="")
    path.write_text(path.read_text().replace("suite: raw_products", "suite: products"))

    with pytest.raises(SuiteError, match="'suite' must be 'raw_products'"):
        load_suite("raw_products", policy, suites_dir=tmp_path)


def test_a_new_suite_file_is_enough_for_its_gate_to_run_it(tmp_path: Path) -> None:
    for name in SUITE_FILES:
        (tmp_path / f"{name}.yml").write_bytes((default_suites_dir() / f"{name}.yml").read_bytes())
    assert suites_of("raw_data", tmp_path) == RAW_SUITES
    assert suites_of("training_data", tmp_path) == TRAINING_SUITES
    # A mart suite by its table's schema, and a raw table judged late by its gate: key.
    (tmp_path / "category_mix.yml").write_text(
        "suite: category_mix\ntable: marts.agg_category_mix\nexpectations: []\n"
    )
    (tmp_path / "raw_late.yml").write_text(
        "suite: raw_late\ntable: raw.products\ngate: training_data\nexpectations: []\n"
    )
    assert suites_of("training_data", tmp_path) == (
        "category_mix",
        *TRAINING_SUITES[:1],
        "raw_late",
        *TRAINING_SUITES[1:],
    )
    (tmp_path / "stray.yml").write_text("suite: stray\ntable: staging.x\nexpectations: []\n")
    with pytest.raises(SuiteError, match=r"stray\.yml: 'gate' must be one of"):
        suites_of("raw_data", tmp_path)


def copy_of_the_suites(folder: Path) -> Path:
    """``folder`` holding a copy of every shipped suite file."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SUITE_FILES:
        (folder / f"{name}.yml").write_bytes((default_suites_dir() / f"{name}.yml").read_bytes())
    return folder


def test_the_policy_can_require_suites_of_every_gate_that_runs_them() -> None:
    assert set(get_args(SuiteGate)) == set(GATE_OF_SCHEMA.values())


@pytest.mark.parametrize("name", ["governance.yml", "deploy/governance.production.yml"])
def test_the_shipped_policies_require_suites_their_gates_run(name: str) -> None:
    shipped = load_policy(project_root() / name)
    runs = {"raw_data": RAW_SUITES, "training_data": TRAINING_SUITES}
    assert set(shipped.required_suites) == set(runs)
    for gate, required in shipped.required_suites.items():
        names, checks = gate_suites(gate, shipped)

        assert names == runs[gate]
        assert [c["name"] for c in checks] == [f"{gate}.required_suite.{s}" for s in required]
        assert {c["status"] for c in checks} == {"pass"}


def test_a_required_suite_whose_file_is_gone_fails_its_gate(tmp_path: Path, policy: Policy) -> None:
    folder = copy_of_the_suites(tmp_path / "expectations")
    (folder / "raw_products.yml").unlink()

    names, checks = gate_suites("raw_data", policy, folder)
    outcome = GateOutcome.of("raw_data", "data:b1", checks)

    assert "raw_products" not in names
    assert outcome.status == "fail"
    (failed,) = outcome.failed_checks
    assert (failed["name"], failed["status"], failed["severity"]) == (
        "raw_data.required_suite.raw_products",
        "fail",
        "error",
    )
    assert failed["message"] == (
        f"the policy requires suite raw_products in raw_data: no suite file "
        f"{folder / 'raw_products.yml'}"
    )
    assert "required_suites.raw_data in the policy" in failed["expected"]
    assert failed["comment"]
    assert "raw_data.required_suite.raw_products" in outcome.summary
    relaxed = policy.model_copy(update={"severities": {"raw_data.required_suite": "warn"}})
    _, downgraded = gate_suites("raw_data", relaxed, folder)
    assert GateOutcome.of("raw_data", "data:b1", downgraded).status == "warn"


def test_a_required_suite_bound_to_another_gate_fails_the_gate_requiring_it(
    tmp_path: Path, policy: Policy
) -> None:
    folder = copy_of_the_suites(tmp_path / "expectations")
    path = folder / "raw_products.yml"
    path.write_text(
        path.read_text().replace(
            "table: raw.products\n", "table: raw.products\ngate: training_data\n"
        )
    )

    raw_names, raw_checks = gate_suites("raw_data", policy, folder)
    training_names, _ = gate_suites("training_data", policy, folder)

    assert "raw_products" not in raw_names
    assert "raw_products" in training_names
    failed = [c for c in raw_checks if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["raw_data.required_suite.raw_products"]
    assert failed[0]["observed"] == f"{path} runs in training_data"


def test_a_new_suite_file_runs_without_a_policy_edit(tmp_path: Path, policy: Policy) -> None:
    folder = copy_of_the_suites(tmp_path / "expectations")
    (folder / "category_mix.yml").write_text(
        "suite: category_mix\ntable: marts.agg_category_mix\nexpectations: []\n"
    )

    names, checks = gate_suites("training_data", policy, folder)

    assert names == ("category_mix", *TRAINING_SUITES)
    assert "category_mix" not in policy.required_suites["training_data"]
    assert GateOutcome.of("training_data", "data:f1", checks).status == "pass"


def test_a_policy_without_required_suites_adds_no_check(tmp_path: Path) -> None:
    folder = copy_of_the_suites(tmp_path / "expectations")
    (folder / "raw_products.yml").unlink()
    inline = parse_policy(b"version: 1\n", "inline")

    names, checks = gate_suites("raw_data", inline, folder)

    assert names == tuple(name for name in RAW_SUITES if name != "raw_products")
    assert checks == []
