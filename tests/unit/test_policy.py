"""The governance policy: the shipped file is valid, every mistake is named, and no
attack on the file (loosened gates, out-of-range numbers, YAML bombs) gets through."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import pytest

from shelfguard.config import project_root
from shelfguard.policy import (
    MANDATORY_GATES,
    MAX_POLICY_BYTES,
    Policy,
    PolicyError,
    load_policy,
    parse_policy,
)

SHIPPED = ["governance.yml", "deploy/governance.production.yml"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_loads_and_is_hashed(name: str) -> None:
    path = project_root() / name
    policy = load_policy(path)
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.privacy.k_anonymity >= 5
    assert policy.privacy.raw_retention_days == 30
    assert policy.warnings == []
    assert set(policy.required_gates) >= set(MANDATORY_GATES)
    assert policy.severity("raw_products.product_id_unique") == "error"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "version: 1\nraw_data:\n  max_quarantine_share: 2\n",
            "raw_data.max_quarantine_share: Input should be less than or equal to 1",
        ),
        (
            "version: 1\nraw_data:\n  max_quarantin_share: 0.1\n",
            "raw_data.max_quarantin_share: Extra inputs are not permitted",
        ),
        ("version: 2\n", "version: Input should be 1"),
        (
            "version: 1\nprivacy: {k_anonymity: 0}\n",
            "privacy.k_anonymity: Input should be greater than or equal to 2",
        ),
        (
            "version: 1\nseverities: {raw_products.x: fatal}\n",
            "severities.raw_products.x: Input should be 'error' or 'warn'",
        ),
        ("version: 1\nsha256: abc\n", "'sha256' is computed on load"),
        ("- just a list\n", "expected a mapping at the top level"),
        ("version: [1\n", "not valid YAML"),
    ],
)
def test_bad_policy_is_refused_with_the_key_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "governance.yml"
    path.write_text(text)
    with pytest.raises(PolicyError) as excinfo:
        load_policy(path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_missing_policy_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yml")


def test_policy_hash_changes_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "governance.yml"
    path.write_text("version: 1\n")
    first = load_policy(path).sha256
    path.write_text("version: 1\nprivacy: {k_anonymity: 9}\n")
    second = load_policy(path)
    assert second.sha256 != first
    assert second.privacy.k_anonymity == 9


def refusal(tmp_path: Path, text: str) -> str:
    """The message of the PolicyError loading ``text`` raises (it must raise)."""
    path = tmp_path / "governance.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as excinfo:
        load_policy(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ")
    return message


def test_default_required_gates_are_the_mandatory_ones() -> None:
    assert Policy(version=1).required_gates == list(MANDATORY_GATES)


@pytest.mark.parametrize(
    ("gates", "message"),
    [
        ("[]", "missing: ingest, raw_data, training_data, evaluation, index"),
        ("[ingest, raw_data, training_data, evaluation]", "missing: index"),
        ("[ingest, training_data, evaluation, index]", "missing: raw_data"),
        ("[evaluation, index]", "missing: ingest, raw_data, training_data"),
        (
            "[ingest, raw_data, training_data, evalution, index]",
            "required_gates.3: Input should be 'ingest', 'raw_data', 'dbt'",
        ),
        ("[ingest, raw_data, training_data, evaluation, index, index]", "lists index more than"),
    ],
)
def test_required_gates_always_hold_the_mandatory_gates(
    tmp_path: Path, gates: str, message: str
) -> None:
    text = refusal(tmp_path, f"version: 1\nrequired_gates: {gates}\n")
    assert "required_gates" in text
    assert message in text


def test_required_gates_may_add_the_dbt_gate(tmp_path: Path) -> None:
    path = tmp_path / "governance.yml"
    path.write_text(
        "version: 1\nrequired_gates: [ingest, raw_data, dbt, training_data, evaluation, index]\n"
    )
    assert "dbt" in load_policy(path).required_gates


@pytest.mark.parametrize(
    ("approval", "message"),
    [
        (
            "{mode: required, approvers: []}",
            "approval.approvers: needs at least one approver when approval.mode is 'required'",
        ),
        (
            "{mode: required}",
            "approval.approvers: needs at least one approver when approval.mode is 'required'",
        ),
        (
            "{index_refresh: required, approvers: []}",
            "approval.approvers: needs at least one approver when approval.index_refresh",
        ),
        ("{mode: required, approvers: ['']}", "approval.approvers.0: must be a non-empty name"),
        ("{mode: required, approvers: [' bob']}", "approval.approvers.0: must be a non-empty"),
    ],
)
def test_a_required_approval_needs_an_approver(tmp_path: Path, approval: str, message: str) -> None:
    assert message in refusal(tmp_path, f"version: 1\napproval: {approval}\n")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (
            "training_data:\n  min_pairs_per_split: {train: -5, validation: 20}",
            "training_data.min_pairs_per_split.train: Input should be greater than or equal to 1",
        ),
        (
            "training_data:\n  min_pairs_per_split: {train: 200, validation: 0}",
            "training_data.min_pairs_per_split.validation: Input should be greater than or equal",
        ),
        (
            "training_data:\n  min_pairs_per_split: {train: 200}",
            "training_data.min_pairs_per_split: must set a minimum for every split; missing: valid",
        ),
        (
            "training_data:\n  min_pairs_per_split: {train: 1.5, validation: 20}",
            "training_data.min_pairs_per_split.train: Input should be a valid integer",
        ),
        (
            "training_data:\n  min_pairs_per_split: {train: '200', validation: 20}",
            "training_data.min_pairs_per_split.train: Input should be a valid integer",
        ),
        (
            "training_data:\n  max_grade_share: -0.1",
            "training_data.max_grade_share: Input should be greater than or equal to 0",
        ),
        (
            "training_data:\n  max_category_drift: 1.5",
            "training_data.max_category_drift: Input should be less than or equal to 1",
        ),
        (
            "raw_data:\n  max_duplicate_id_share: .nan",
            "raw_data.max_duplicate_id_share: Input should be a finite number",
        ),
        (
            "raw_data:\n  max_orphan_judgement_share: .inf",
            "raw_data.max_orphan_judgement_share: Input should be a finite number",
        ),
        (
            "raw_data:\n  max_empty_required_share: '0.5'",
            "raw_data.max_empty_required_share: Input should be a valid number",
        ),
        (
            "raw_data:\n  max_quarantine_share: true",
            "raw_data.max_quarantine_share: Input should be a valid number",
        ),
        (
            "raw_data:\n  allow_extra_columns: 'no'",
            "raw_data.allow_extra_columns: Input should be a valid boolean",
        ),
        (
            "evaluation:\n  floors: {ndcg@10: 1.2}",
            "evaluation.floors.ndcg@10: Input should be less than or equal to 1",
        ),
        (
            "evaluation:\n  max_drop_vs_champion: -.inf",
            "evaluation.max_drop_vs_champion: Input should be a finite number",
        ),
        (
            "evaluation:\n  max_slice_drop: 2",
            "evaluation.max_slice_drop: Input should be less than or equal to 1",
        ),
        (
            "evaluation:\n  slice_min_queries: 0",
            "evaluation.slice_min_queries: Input should be greater than or equal to 1",
        ),
        (
            "evaluation:\n  slice_min_queries: 10000000000",
            "evaluation.slice_min_queries: Input should be less than or equal to 1000000",
        ),
        (
            "index:\n  min_ann_recall_at_10: -1",
            "index.min_ann_recall_at_10: Input should be greater than or equal to 0",
        ),
        (
            "index:\n  min_canary_hit_rate: .NaN",
            "index.min_canary_hit_rate: Input should be a finite number",
        ),
        (
            "approval:\n  timeout_minutes: .inf",
            "approval.timeout_minutes: Input should be a finite number",
        ),
        (
            "approval:\n  timeout_minutes: .nan",
            "approval.timeout_minutes: Input should be a finite number",
        ),
        ("approval:\n  timeout_minutes: 0", "approval.timeout_minutes: Input should be greater"),
        ("approval:\n  timeout_minutes: -5", "approval.timeout_minutes: Input should be greater"),
        (
            "approval:\n  timeout_minutes: 43201",
            "approval.timeout_minutes: Input should be less than or equal to 43200",
        ),
        (
            "privacy:\n  k_anonymity: 10000001",
            "privacy.k_anonymity: Input should be less than or equal to 1000000",
        ),
        (
            "privacy:\n  raw_retention_days: 0",
            "privacy.raw_retention_days: Input should be greater than or equal to 1",
        ),
        (
            "privacy:\n  raw_retention_days: 3651",
            "privacy.raw_retention_days: Input should be less than or equal to 3650",
        ),
        (
            "privacy:\n  raw_retention_days: '30'",
            "privacy.raw_retention_days: Input should be a valid integer",
        ),
        ("owners: ['']", "owners.0: must be a non-empty name"),
    ],
)
def test_every_count_share_and_timeout_is_finite_and_in_range(
    tmp_path: Path, block: str, message: str
) -> None:
    text = refusal(tmp_path, f"version: 1\n{block}\n")
    assert message in text
    assert len(text.splitlines()) == 2, text


def test_k_anonymity_of_one_is_refused(tmp_path: Path) -> None:
    text = refusal(tmp_path, "version: 1\nprivacy:\n  k_anonymity: 1\n")
    assert "privacy.k_anonymity: Input should be greater than or equal to 2 (got 1)" in text


@pytest.mark.parametrize("k", [2, 3, 4])
def test_k_anonymity_below_five_is_accepted_with_a_warning(
    tmp_path: Path, k: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "governance.yml"
    path.write_text(f"version: 1\nprivacy:\n  k_anonymity: {k}\n")
    with caplog.at_level(logging.WARNING, logger="shelfguard.policy"):
        policy = load_policy(path)
    assert policy.privacy.k_anonymity == k
    assert len(policy.warnings) == 1
    assert f"privacy.k_anonymity is {k}" in policy.warnings[0]
    assert [r.getMessage() for r in caplog.records] == [f"{path}: {policy.warnings[0]}"]


def test_k_anonymity_of_five_or_more_gives_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "governance.yml"
    path.write_text("version: 1\nprivacy:\n  k_anonymity: 5\n")
    with caplog.at_level(logging.WARNING, logger="shelfguard.policy"):
        assert load_policy(path).warnings == []
    assert caplog.records == []


# The "billion laughs": 9 ** 9 strings from a few hundred bytes (60 s of CPU and 2.6 GB
# with yaml.safe_load).
ALIAS_BOMB = """version: 1
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path) -> None:
    started = time.perf_counter()
    text = refusal(tmp_path, ALIAS_BOMB)
    elapsed = time.perf_counter() - started
    print(f"alias bomb refused in {elapsed * 1000:.2f} ms")
    assert "YAML anchors are not allowed (found &a) at line 2, column 4" in text
    assert len(text) < 300
    assert elapsed < 1.0  # refused at its first anchor: milliseconds, not a minute


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nowners: &people [a]\n", "YAML anchors are not allowed (found &people)"),
        ("version: 1\nowners: *people\n", "YAML aliases are not allowed (found *people)"),
        ("version: &v 1\n", "YAML anchors are not allowed (found &v) at line 1, column 10"),
        ("version: 1\nprivacy:\n  <<: {k_anonymity: 1}\n", "merge keys (<<) are not allowed"),
        (
            "version: 1\nprivacy:\n  k_anonymity: 9\n  k_anonymity: 2\n",
            "duplicate key 'k_anonymity' at line 4, column 3",
        ),
        ("version: 1\n---\nversion: 1\n", "one YAML document, but another one starts here"),
        ("version: 1\n...\n---\nrequired_gates: []\n", "one YAML document, but another"),
        ("version: 1\nowners: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 10 levels"),
        (
            "version: 1\nowners: !!python/object/apply:os.system [ls]\n",
            "could not determine a constructor for the tag",
        ),
    ],
)
def test_yaml_beyond_one_plain_document_is_refused(tmp_path: Path, text: str, message: str) -> None:
    found = refusal(tmp_path, text)
    assert "not valid YAML" in found
    assert message in found


def test_a_policy_over_the_size_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    padding = "# " + "x" * (MAX_POLICY_BYTES - 100) + "\n"
    path = tmp_path / "governance.yml"
    path.write_text(f"version: 1\n{padding}")
    assert load_policy(path).version == 1  # just under the limit: fine
    text = refusal(tmp_path, f"version: 1\n{padding}{padding}")
    assert f"at most {MAX_POLICY_BYTES} are accepted" in text
    with pytest.raises(PolicyError, match="at most 65536"):
        parse_policy(b"version: 1\n" + b"#" * MAX_POLICY_BYTES, "pinned")


def test_a_two_megabyte_value_is_refused_with_a_short_message(tmp_path: Path) -> None:
    text = refusal(tmp_path, "version: 1\nprivacy:\n  k_anonymity: " + "x" * 2_000_000 + "\n")
    assert len(text) < 300
    assert "bytes; at most 65536 are accepted" in text


@pytest.mark.parametrize(
    "text",
    [
        # a long single-line string in an integer field
        "version: 1\nprivacy:\n  k_anonymity: " + "x" * 60_000 + "\n",
        # the same in a list field, and as a whole section
        "version: 1\nowners: " + "y" * 60_000 + "\n",
        "version: 1\nprivacy: " + "z" * 60_000 + "\n",
        # a long key, where the key is part of the error's location
        "version: 1\nseverities:\n  " + "k" * 1000 + ": error\n",
        # a multi-line value
        "version: 1\nprivacy:\n  k_anonymity: |\n" + "    line\n" * 5000,
    ],
    ids=["long-value", "long-list", "long-section", "long-key", "multi-line-value"],
)
def test_an_error_echoes_at_most_one_short_line_of_input(tmp_path: Path, text: str) -> None:
    found = refusal(tmp_path, text)
    header, *problems = found.splitlines()
    assert header.endswith(": invalid policy")
    assert len(problems) == 1, found[:1000]
    assert len(problems[0]) < 300, problems[0][:1000]


def test_yaml_errors_show_the_problem_and_its_place_not_the_input(tmp_path: Path) -> None:
    text = refusal(tmp_path, "version: 1\n\towners: " + "w" * 30_000 + "\n")
    assert "found character '\\t' that cannot start any token at line 2, column 1" in text
    assert "www" not in text
    assert len(text.splitlines()) == 1
    assert len(text) < 300


def test_many_problems_are_listed_up_to_a_bound(tmp_path: Path) -> None:
    entries = "".join(f"  check_{i}: fatal\n" for i in range(500))
    text = refusal(tmp_path, f"version: 1\nseverities:\n{entries}")
    lines = text.splitlines()
    assert lines[-1] == "  … and 480 more"
    assert len(lines) == 22


def test_required_suites_are_optional(tmp_path: Path) -> None:
    path = tmp_path / "governance.yml"
    path.write_text("version: 1\n")
    assert load_policy(path).required_suites == {}
    path.write_text("version: 1\nrequired_suites:\n  training_data: [training_pairs]\n")
    assert load_policy(path).required_suites == {"training_data": ["training_pairs"]}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_policy_requires_suites_of_both_data_gates(name: str) -> None:
    required = load_policy(project_root() / name).required_suites
    assert set(required) == {"raw_data", "training_data"}
    assert "raw_products" in required["raw_data"]
    assert "training_pairs" in required["training_data"]


@pytest.mark.parametrize(
    ("suites", "message"),
    [
        (
            "{raw: [raw_products]}",
            "required_suites.raw.[key]: Input should be 'raw_data' or 'training_data'",
        ),
        (
            "{dbt: [raw_products]}",
            "required_suites.dbt.[key]: Input should be 'raw_data' or 'training_data'",
        ),
        ("[raw_products]", "required_suites: Input should be a valid dictionary"),
        ("{raw_data: raw_products}", "required_suites.raw_data: Input should be a valid list"),
        ("{raw_data: null}", "required_suites.raw_data: Input should be a valid list"),
        ("{raw_data: [1]}", "required_suites.raw_data.0: Input should be a valid string"),
        ("{raw_data: ['']}", "required_suites.raw_data.0: must be a suite name"),
        ("{raw_data: [../raw_products]}", "required_suites.raw_data.0: must be a suite name"),
        ("{raw_data: [Raw-Products]}", "required_suites.raw_data.0: must be a suite name"),
        (
            "{raw_data: [raw_products, raw_products]}",
            "required_suites: lists raw_products more than once",
        ),
        (
            "{raw_data: [raw_products], training_data: [raw_products]}",
            "required_suites: lists raw_products more than once (a suite runs in one gate",
        ),
    ],
)
def test_required_suites_name_data_gates_and_suites_once(
    tmp_path: Path, suites: str, message: str
) -> None:
    text = refusal(tmp_path, f"version: 1\nrequired_suites: {suites}\n")
    assert message in text
    assert len(text.splitlines()) == 2, text
