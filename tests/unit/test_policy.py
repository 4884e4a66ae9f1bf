"""The governance policy: the shipped file is valid, and every mistake is named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shelfguard.config import project_root
from shelfguard.policy import PolicyError, load_policy


def test_shipped_policy_loads_and_is_hashed() -> None:
    path = project_root() / "governance.yml"
    policy = load_policy(path)
    assert policy.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert policy.privacy.k_anonymity >= 2
    assert set(policy.required_gates) >= {"ingest", "raw_data", "training_data", "evaluation"}
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
            "privacy.k_anonymity: Input should be greater than or equal to 1",
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
