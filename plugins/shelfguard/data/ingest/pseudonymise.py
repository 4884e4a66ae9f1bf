"""Pseudonyms: personal columns are replaced by keyed hashes before anything is stored.

The ``value -> pseudonym`` relations are computed in this process (the key never goes
into SQL) and joined by the loaders of both warehouses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import duckdb
import pyarrow as pa

from shelfguard.config import load_settings
from shelfguard.data.pseudonyms import load_key, pseudonym
from shelfguard.data.wands import RAW_META, FileSpec

KeySource = Callable[[], bytes]
_RAW_META_SQL = ", ".join(f"t.{name}" for name in RAW_META)


def _pseudonym_relation(stored: str) -> str:
    return f"_pseudonyms_{stored}"


def _pseudonym_table(values: Sequence[str], key: bytes) -> pa.Table:
    """``value -> pseudonym`` for every distinct value: the key stays in this process."""
    return pa.table(
        {
            "value": pa.array(values, pa.string()),
            "pseudonym": pa.array([pseudonym(key, value) for value in values], pa.string()),
        }
    )


def _stored_select(spec: FileSpec) -> tuple[str, str]:
    """The stored columns as a select list over the rows aliased ``t``, and the joins
    it needs: each pseudonym is looked up in its ``value -> pseudonym`` relation."""
    replaced = {source: stored for stored, source in spec.pseudonyms}
    select, joins = [], []
    for name in spec.columns:
        if name in replaced:
            relation = _pseudonym_relation(replaced[name])
            select.append(f'{relation}.pseudonym AS "{replaced[name]}"')
            joins.append(f'LEFT JOIN {relation} ON {relation}.value = t."{name}"')
        elif name not in spec.personal:
            select.append(f't."{name}"')
    return ", ".join(select), " ".join(joins)


def _register_pseudonyms(
    con: duckdb.DuckDBPyConnection, spec: FileSpec, relation: str, key: KeySource
) -> None:
    """Register the ``value -> pseudonym`` relations :func:`_stored_select` joins, for the
    values of ``relation`` (a table or a parenthesised query)."""
    for stored, source in spec.pseudonyms:
        values = con.execute(
            f'SELECT DISTINCT "{source}" FROM {relation} AS t WHERE "{source}" IS NOT NULL'
        ).fetchall()
        con.register(_pseudonym_relation(stored), _pseudonym_table([v for (v,) in values], key()))


def _unregister_pseudonyms(con: duckdb.DuckDBPyConnection, spec: FileSpec) -> None:
    for stored, _ in spec.pseudonyms:
        con.unregister(_pseudonym_relation(stored))


def _clear_columns(spec: FileSpec, existing: Sequence[str]) -> list[str]:
    return [name for name in spec.personal if name in existing]


def _key_source(kind: str, pseudonym_key: bytes | None) -> KeySource:
    """The key, read from its secret store the first time a personal column needs it."""
    if pseudonym_key is not None:
        return lambda: pseudonym_key

    @functools.cache
    def key() -> bytes:
        return load_key(kind, load_settings().home)

    return key
