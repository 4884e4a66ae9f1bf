"""What an embedded run is doing, task by task, read from Airflow's own metadata.

``airflow dags test`` records every task instance in the home's SQLite metadata
database as it runs. :class:`TaskWatcher` polls it (read-only, once a second) for the
run a request started and reports each task when it starts and when it ends, with its
state and how long it took, so ``shelfguard run`` can show progress without reading
Airflow's log lines.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

#: Task states that end a task instance.
ENDED = {"success", "failed", "skipped", "upstream_failed", "removed"}


@dataclass(frozen=True)
class TaskEvent:
    """A task that started (``state == "running"``, no duration) or ended."""

    task_id: str
    state: str
    seconds: float | None


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


class TaskWatcher:
    """Reports the task instances of one embedded run as they start and end."""

    def __init__(
        self,
        database: Path,
        dag_id: str,
        request_id: str,
        on_task: Callable[[TaskEvent], None],
        poll_seconds: float = 1.0,
    ) -> None:
        self.database = database
        self.dag_id = dag_id
        self.request_id = request_id
        self.on_task = on_task
        self.poll_seconds = poll_seconds
        self._seen: dict[str, str] = {}
        self._run_id: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="shelfguard-progress", daemon=True)

    def __enter__(self) -> TaskWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.poll()  # the tasks that ended since the last poll

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.poll()

    def poll(self) -> None:
        """Read the run's task instances once and report what changed."""
        if not self.database.exists():
            return
        try:
            with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
                if self._run_id is None:
                    row = db.execute(
                        "SELECT run_id FROM dag_run WHERE dag_id = ? AND conf LIKE ?",
                        (self.dag_id, f'%"request_id": "{self.request_id}"%'),
                    ).fetchone()
                    if row is None:
                        return
                    self._run_id = str(row[0])
                rows = db.execute(
                    "SELECT task_id, state, start_date, end_date FROM task_instance "
                    "WHERE dag_id = ? AND run_id = ? AND state IS NOT NULL "
                    "ORDER BY coalesce(end_date, start_date)",
                    (self.dag_id, self._run_id),
                ).fetchall()
        except sqlite3.Error:
            return  # Airflow is writing; the next poll reads it
        for task_id, state, started, ended in rows:
            state, before = str(state), self._seen.get(task_id)
            if state == "running" and before is None:
                self._seen[task_id] = state
                self.on_task(TaskEvent(task_id, state, None))
            elif state in ENDED and before not in ENDED:
                begin, end = _when(started), _when(ended)
                seconds = (end - begin).total_seconds() if begin and end else None
                self._seen[task_id] = state
                self.on_task(TaskEvent(task_id, state, seconds))
