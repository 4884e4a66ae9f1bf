"""The footing every part of the ledger stands on: connection, migrations and shared helpers.

:class:`LedgerBase` holds the engine and its sessions; the subject mixins (runs,
ingestion, approvals, aliases, verification) inherit from it the helpers they share:
read and write sessions, idempotent inserts, run lookup and hash-chain appends.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from shelfguard.ledger.chain import GENESIS, entry_hash, payload_sha256
from shelfguard.ledger.engine import (
    _ALEMBIC_LOCK,
    _PG_CHAIN_LOCK,
    _PG_MIGRATION_LOCK,
    _WRITE_OPTION,
    _create_engine,
    _set_sqlite_foreign_keys,
    alembic_config,
)
from shelfguard.ledger.models import Base, ChainEntry, Run
from shelfguard.ledger.records import LedgerError, _now

_T = TypeVar("_T")
_R = TypeVar("_R")


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise LedgerError(f"{what} {value!r} is not one of: {', '.join(allowed)}")


def _check_json(what: str, value: _T) -> _T:
    # PostgreSQL's json type rejects NaN and Infinity that SQLite would store, so
    # refuse them on both backends rather than let the two disagree.
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"{what} must be JSON-serialisable without NaN/Infinity: {exc}") from exc
    return value


def _columns(row: Base) -> dict[str, Any]:
    """A mapped row's column values by name (what the chain payloads read)."""
    return {attr.key: getattr(row, attr.key) for attr in sa.inspect(row).mapper.column_attrs}


class LedgerBase:
    """The ledger's connection to one database and the helpers its subject mixins share."""

    def __init__(self, url: str) -> None:
        """Connect lazily to ``url``; call :meth:`migrate` before the first use."""
        self._engine = _create_engine(url)
        self._dialect = self._engine.dialect.name
        self._read_sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self._engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False
        )

    def __repr__(self) -> str:
        return f"Ledger({self._engine.url!r})"

    @property
    def engine(self) -> sa.Engine:
        """The underlying engine, for tests and diagnostics; write through the methods."""
        return self._engine

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision; a no-op when it is already there.

        Safe to call on every start, from several processes at once: on SQLite
        the write lock, on PostgreSQL an advisory lock, makes later callers wait
        and then find nothing to do.
        """
        # Alembic keeps its running context in module globals, so two threads of
        # one process must not run it at the same time, even on different databases.
        with _ALEMBIC_LOCK, self._engine.connect() as connection:
            if self._dialect == "sqlite":
                # Batch migrations copy a table and drop the original; with foreign
                # keys enforced that drop would cascade or fail.
                _set_sqlite_foreign_keys(connection, False)
            try:
                self._upgrade(connection.execution_options(**{_WRITE_OPTION: True}))
            finally:
                if self._dialect == "sqlite":
                    _set_sqlite_foreign_keys(connection, True)

    def _upgrade(self, connection: sa.Connection) -> None:
        with connection.begin():
            if self._dialect == "postgresql":
                connection.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK}
                )
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            if self._dialect == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise LedgerError(f"migration left dangling foreign keys: {broken}")

    def dispose(self) -> None:
        """Close every pooled connection (call before a process exits or forks)."""
        self._engine.dispose()

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._write_sessions.begin() as session:
            yield session

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        with self._read_sessions() as session:
            yield session

    def _all(self, query: sa.Select[Any], convert: Callable[[Any], _R]) -> list[_R]:
        """Every row ``query`` selects, each made a record by ``convert``, in a read session."""
        with self._reading() as session:
            return [convert(row) for row in session.scalars(query)]

    def _insert(
        self, entity: type[Base], values: Mapping[str, Any]
    ) -> postgresql.Insert | sqlite.Insert:
        # ON CONFLICT is the race-free way to make a write idempotent: two
        # processes inserting the same key never produce two rows or an error.
        if self._dialect == "postgresql":
            return postgresql.insert(entity).values(dict(values))
        return sqlite.insert(entity).values(dict(values))

    def _require_run(self, session: Session, run_id: str, *, lock: bool = False) -> Run:
        # Locking (FOR UPDATE on PostgreSQL; SQLite's write lock already covers
        # it) is for read-modify-write of the run row or of rows keyed on it.
        query = sa.select(Run).where(Run.run_id == run_id)
        row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
        if row is None:
            raise LedgerError(f"unknown run {run_id!r}: call start_run first")
        return row

    # hash-chain appends (checked by VerifyMixin)

    def _lock_chain(self, session: Session) -> None:
        # First statement of a chained write, before any row lock, so that two
        # writers never wait for each other's locks in opposite orders.
        if self._dialect == "postgresql":
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CHAIN_LOCK})

    def _chain(self, session: Session, kind: str, ref_id: int, payload: Mapping[str, Any]) -> None:
        """Append a chain entry for the row, unless its latest entry already has this payload."""
        digest = payload_sha256(payload)
        latest = session.execute(
            sa.select(ChainEntry.payload_sha256)
            .where(ChainEntry.kind == kind, ChainEntry.ref_id == ref_id)
            .order_by(ChainEntry.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        if latest == digest:
            return
        head = session.execute(
            sa.select(ChainEntry.row_hash).order_by(ChainEntry.id.desc()).limit(1)
        ).scalar_one_or_none()
        prev = head or GENESIS
        session.add(
            ChainEntry(
                kind=kind,
                ref_id=ref_id,
                payload_sha256=digest,
                prev_hash=prev,
                row_hash=entry_hash(prev, kind, ref_id, digest),
                recorded_at=_now(),
            )
        )
        session.flush()
