"""Who is running what on one home: one embedded run per DAG, and abandoned runs.

The embedded runner (``shelfguard run``) holds an exclusive lock on
``$SHELFGUARD_HOME/locks/<dag_id>.lock`` for as long as its run lives: the lock is
taken before Airflow starts and shared with the Airflow process, so it is released
only when both are gone, however they end (a SIGKILL included: the kernel drops the
lock with the last open file). The lock file names its holder (request id, process,
user, start time). Hence:

- a second ``shelfguard run`` of the same DAG on the same home refuses at once,
  naming the run that holds the lock (two different DAGs do not share a lock);
- a run the ledger still calls ``RUNNING`` whose lock is free, or held by another
  request, lost its process: :func:`reap_abandoned` marks it ``ABANDONED`` with the
  last task Airflow started, so ``status`` never shows a dead run as running. The
  CLI reaps whenever it opens the ledger, and every run does at its start.

Runs on a production Airflow (scheduler, Celery workers) carry no lock: Airflow's
own zombie detection fails their tasks, and the DAG's ``finalize`` task records it.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import sqlite3
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from shelfguard.config import Settings
from shelfguard.ledger import Ledger, RunRecord

#: Set by the embedded runner in the Airflow process's environment: the lock file it holds.
RUN_LOCK_ENV = "SHELFGUARD_EMBEDDED_RUN_LOCK"
#: ``runs.lineage["runner"]`` of a run started by the embedded runner.
EMBEDDED_RUNNER = "embedded"


class AlreadyRunning(RuntimeError):
    """Another run of the same DAG holds the home's lock; the message names it."""


def lock_path(settings: Settings, dag_id: str) -> Path:
    """The lock file of ``dag_id`` on this home."""
    return settings.home / "locks" / f"{dag_id}.lock"


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def holder(settings: Settings, dag_id: str) -> dict[str, Any] | None:
    """Who holds ``dag_id``'s lock (request id, pid, user, started), or None when nobody."""
    path = lock_path(settings, dag_id)
    if not path.exists():
        return None
    with path.open("a+", encoding="utf-8") as handle:
        if _try_lock(handle):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return None
    return _read_holder(path)


@dataclass
class RunLock:
    """The exclusive lock of one embedded run of ``dag_id`` (a context manager).

    Entering refuses with :class:`AlreadyRunning` when another run holds it. ``fileno``
    is passed to the Airflow process, which then holds the lock as well.
    """

    settings: Settings
    dag_id: str
    request_id: str
    _handle: IO[str] | None = None

    @property
    def path(self) -> Path:
        """The lock file."""
        return lock_path(self.settings, self.dag_id)

    def fileno(self) -> int:
        """The locked file descriptor (to share with a child process)."""
        assert self._handle is not None, "the lock is not held"
        return self._handle.fileno()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Take the lock, or refuse with :class:`AlreadyRunning` naming who holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        if not _try_lock(handle):
            handle.close()
            raise AlreadyRunning(self._busy_message(_read_holder(self.path)))
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps(
                {
                    "request_id": self.request_id,
                    "pid": os.getpid(),
                    "user": getpass.getuser(),
                    "started": datetime.now(UTC).isoformat(timespec="seconds"),
                }
            )
        )
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        """Let go of the lock (a child process given :meth:`fileno` may still hold it)."""
        if self._handle is not None:
            # Closing, not LOCK_UN: unlocking would free the lock for the child too.
            self._handle.close()
            self._handle = None

    def _busy_message(self, info: dict[str, Any]) -> str:
        from shelfguard.ledger import open_ledger

        run_id = None
        request = info.get("request_id")
        if request:
            ledger = open_ledger(self.settings.ledger_url)
            try:
                run = ledger.run_of_request(self.dag_id, str(request))
                run_id = None if run is None else run.run_id
            finally:
                ledger.dispose()
        who = f"by {info.get('user', '?')}, process {info.get('pid', '?')}, since {info.get('started', '?')}"
        return (
            f"{self.dag_id} is already running on this home: run {run_id or '(starting)'} "
            f"({who}). Wait for it to finish (`shelfguard status`), or stop that process; "
            "one run per DAG per home"
        )


def last_task(settings: Settings, run: RunRecord) -> str | None:
    """The last task the embedded Airflow started for ``run`` (and its state), if known."""
    database = settings.airflow_home / "airflow.db"
    if not database.exists() or "/" not in run.run_id:
        return None
    dag_id, airflow_run = run.run_id.split("/", 1)
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5) as connection:
            row = connection.execute(
                "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ? "
                "AND start_date IS NOT NULL ORDER BY start_date DESC LIMIT 1",
                (dag_id, airflow_run),
            ).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else f"{row[0]} ({row[1] or 'no state'})"


def _alive(settings: Settings, run: RunRecord) -> bool:
    info = holder(settings, run.dag_id)
    return info is not None and info.get("request_id") == run.lineage.get("request_id")


def abandon(settings: Settings, ledger: Ledger, run: RunRecord, why: str) -> RunRecord:
    """Record that ``run`` lost its process: ``ABANDONED``, with the last task that ran."""
    task = last_task(settings, run)
    message = why + (f"; last task started: {task}" if task else "")
    return ledger.finish_run(run.run_id, "ABANDONED", message=message)


def reap_abandoned(settings: Settings, ledger: Ledger) -> list[RunRecord]:
    """Mark every embedded run of this home that lost its process ``ABANDONED``."""
    reaped = []
    for run in ledger.running_runs():
        if run.lineage.get("runner") != EMBEDDED_RUNNER or _alive(settings, run):
            continue
        with suppress(Exception):  # reaping is best effort: never the reason a command fails
            reaped.append(
                abandon(settings, ledger, run, "the process running it died before it finished")
            )
    return reaped
