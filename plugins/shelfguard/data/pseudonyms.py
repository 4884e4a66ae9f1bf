"""Pseudonyms: a keyed hash (HMAC-SHA256, hex) of a user id, and where its key comes from.

A pseudonym is stable (the same user id always gives the same pseudonym under one key),
so distinct users can still be counted for k-anonymity; without the key it cannot be
reversed, not even by hashing every possible id (user ids are short and sequential, a
plain hash of one is reversed by enumeration). Ingest pseudonymises ``user_id`` as it
loads ``search_log.csv``; the key never reaches dbt, the warehouse or any file but its
own.

The key comes from a secret store, in this order:

1. ``SHELFGUARD_PSEUDONYM_KEY`` in the environment (at least
   :data:`MIN_ENV_KEY_CHARS` characters): what an Airflow secrets backend, a compose
   secret or the deployment's secret manager provides in production;
2. with the embedded DuckDB warehouse only: the key file ``<home>/secrets/pseudonym.key``,
   :data:`KEY_BYTES` random bytes created on first use with mode 0600 in a 0700 folder.
   A key file or folder that group or others may read is refused.

With a PostgreSQL warehouse and no environment key, :class:`PseudonymKeyError` is
raised: a shared warehouse must not depend on a file on one machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

PSEUDONYM_KEY_VAR = "SHELFGUARD_PSEUDONYM_KEY"
#: The shortest key accepted from the environment.
MIN_ENV_KEY_CHARS = 32
#: Size of a generated key file.
KEY_BYTES = 32
KEY_DIRNAME = "secrets"
KEY_FILENAME = "pseudonym.key"


class PseudonymKeyError(RuntimeError):
    """No usable pseudonymisation key: the message says what to set or fix."""


def pseudonym(key: bytes, value: str) -> str:
    """The pseudonym of ``value`` under ``key``: HMAC-SHA256 of its UTF-8 bytes, in hex."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


def key_path(home: Path) -> Path:
    """Where the embedded setup keeps its generated key: ``<home>/secrets/pseudonym.key``."""
    return home / KEY_DIRNAME / KEY_FILENAME


def _env_key(value: str) -> bytes:
    if len(value) < MIN_ENV_KEY_CHARS:
        raise PseudonymKeyError(
            f"{PSEUDONYM_KEY_VAR} is {len(value)} characters long; it must have at least "
            f'{MIN_ENV_KEY_CHARS} (make one with: python -c "import secrets; '
            'print(secrets.token_urlsafe(48))")'
        )
    return value.encode("utf-8")


def _check_private(path: Path, mode: int, wanted: str) -> None:
    if mode & 0o077:
        raise PseudonymKeyError(
            f"{path} may be read by group or others (mode {stat.S_IMODE(mode):04o}); "
            f"it holds the pseudonymisation key: run `chmod {wanted} {path}`"
        )


def _private_folder(folder: Path) -> None:
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)  # mkdir's mode is masked by the umask
    _check_private(folder, folder.stat().st_mode, "700")


def _create_key_file(path: Path) -> None:
    """Write a new random key, atomically: a concurrent creator's key wins, never half of one."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(secrets.token_bytes(KEY_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        # Fails when another process created the key first: its key is the one kept.
        with contextlib.suppress(FileExistsError):
            os.link(scratch, path)
    finally:
        scratch.unlink(missing_ok=True)


def _file_key(path: Path) -> bytes:
    _private_folder(path.parent)
    if not path.exists():
        _create_key_file(path)
    _check_private(path, path.stat().st_mode, "600")
    key = path.read_bytes()
    if len(key) < KEY_BYTES:
        raise PseudonymKeyError(
            f"{path} holds {len(key)} bytes; a pseudonymisation key has at least {KEY_BYTES}. "
            "Restore the file from its backup (a new key changes every pseudonym)."
        )
    return key


def load_key(warehouse_kind: str, home: Path, environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonymisation key for a warehouse of ``warehouse_kind`` (``duckdb`` or
    ``postgresql``): the environment's, else (DuckDB only) the home's key file, made on
    first use. Raises :class:`PseudonymKeyError` when there is no usable key."""
    environ = os.environ if environ is None else environ
    value = environ.get(PSEUDONYM_KEY_VAR)
    if value:
        return _env_key(value)
    if warehouse_kind != "duckdb":
        raise PseudonymKeyError(
            f"{PSEUDONYM_KEY_VAR} is not set: a {warehouse_kind} warehouse needs the "
            "pseudonymisation key from the environment (an Airflow secrets backend or the "
            "deployment's secret store); see docs/production.md, 'Pseudonyms and their key'"
        )
    return _file_key(key_path(home))
