"""Pseudonyms: keyed, stable, not reversible by enumeration; the key's store is guarded."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from shelfguard.data.pseudonyms import (
    KEY_BYTES,
    PSEUDONYM_KEY_VAR,
    PseudonymKeyError,
    key_path,
    load_key,
    pseudonym,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def user_id(number: int) -> str:
    """The shape of the generator's user ids (``u000123``): short and sequential."""
    return f"u{number:06d}"


def test_a_pseudonym_is_stable_hex_and_depends_on_the_key() -> None:
    first = pseudonym(KEY, "u000042")
    assert first == pseudonym(KEY, "u000042")
    assert len(first) == 64 and int(first, 16) >= 0
    assert first != pseudonym(KEY, "u000043")
    assert first != pseudonym(OTHER_KEY, "u000042")
    # Not the unkeyed hash an attacker could compute for every id.
    assert first != hashlib.sha256(b"u000042").hexdigest()


def test_enumerating_every_id_without_the_key_finds_nobody() -> None:
    ids = [user_id(n) for n in range(100_001)]
    stored = {pseudonym(KEY, value) for value in ids[::997]}
    # An attacker without the key: a wrong key, or the plain and key-less hashes.
    guesses = {pseudonym(OTHER_KEY, value) for value in ids}
    guesses |= {hashlib.sha256(value.encode()).hexdigest() for value in ids}
    guesses |= {pseudonym(b"", value) for value in ids}
    assert stored.isdisjoint(guesses)
    # With the key, enumeration works: which is why the key is the secret.
    assert stored <= {pseudonym(KEY, value) for value in ids}


def test_the_environment_key_wins_and_must_be_long(tmp_path: Path) -> None:
    long_key = "x" * 32
    assert load_key("duckdb", tmp_path, {PSEUDONYM_KEY_VAR: long_key}) == long_key.encode()
    assert load_key("postgresql", tmp_path, {PSEUDONYM_KEY_VAR: long_key}) == long_key.encode()
    assert not key_path(tmp_path).exists(), "no key file when the environment has the key"
    with pytest.raises(PseudonymKeyError, match=rf"{PSEUDONYM_KEY_VAR} is 31 characters long"):
        load_key("duckdb", tmp_path, {PSEUDONYM_KEY_VAR: "y" * 31})


def test_postgresql_without_an_environment_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PseudonymKeyError, match=rf"{PSEUDONYM_KEY_VAR} is not set"):
        load_key("postgresql", tmp_path, {})
    assert not key_path(tmp_path).exists()


def test_the_embedded_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = load_key("duckdb", home, {})
    path = key_path(home)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_key("duckdb", home, {}) == key, "the same key on every later call"
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name], "no scratch file left"
    assert load_key("duckdb", tmp_path / "other-home", {}) != key


@pytest.mark.parametrize(
    ("target", "mode", "command"), [("file", 0o640, "600"), ("dir", 0o750, "700")]
)
def test_a_key_readable_by_others_is_refused(
    tmp_path: Path, target: str, mode: int, command: str
) -> None:
    load_key("duckdb", tmp_path, {})
    path = key_path(tmp_path) if target == "file" else key_path(tmp_path).parent
    path.chmod(mode)
    with pytest.raises(PseudonymKeyError, match=rf"run `chmod {command} {path}`"):
        load_key("duckdb", tmp_path, {})
    path.chmod(int(command, 8))
    assert len(load_key("duckdb", tmp_path, {})) == KEY_BYTES


def test_a_truncated_key_file_is_refused(tmp_path: Path) -> None:
    path = key_path(tmp_path)
    path.parent.mkdir(mode=0o700)
    path.parent.chmod(0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(descriptor, b"short")
    os.close(descriptor)
    with pytest.raises(PseudonymKeyError, match="holds 5 bytes"):
        load_key("duckdb", tmp_path, {})
