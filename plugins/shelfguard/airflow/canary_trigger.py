"""Waiting for a canary's impressions without holding a worker slot.

:class:`CanaryTrigger` runs in Airflow's triggerer (in-process under ``airflow dags
test``): it counts, every ``poll_seconds``, the impressions each of two pairs served in
the search service's delivery folders, and fires once both reached ``min_impressions``,
or once ``deadline`` passed (the online gate then fails closed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


def impressions_by_pair(folder: str, pairs: list[list[str]], since: str) -> list[int]:
    """Impressions each of ``pairs`` (model, index sha256) served under ``folder`` since
    ``since`` (ISO 8601)."""
    from shelfguard.serving.served_log import served_by_pair

    served = served_by_pair(Path(folder), since=datetime.fromisoformat(since))
    return [sum(len(s.clicks) for s in served.get((m, i), [])) for m, i in pairs]


class CanaryTrigger(BaseTrigger):
    """Fires when both pairs served ``min_impressions``, or at ``deadline`` (epoch seconds)."""

    def __init__(
        self,
        folder: str,
        pairs: list[list[str]],
        min_impressions: int,
        deadline: float,
        since: str,
        poll_seconds: float = 30.0,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Airflow leaves it untyped
        self.folder = folder
        self.pairs = pairs
        self.min_impressions = min_impressions
        self.deadline = deadline
        self.since = since
        self.poll_seconds = poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Where the triggerer finds this class, and how to rebuild it."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "folder": self.folder,
                "pairs": self.pairs,
                "min_impressions": self.min_impressions,
                "deadline": self.deadline,
                "since": self.since,
                "poll_seconds": self.poll_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll the delivery folders until enough impressions, or the deadline."""
        while True:
            counts = await asyncio.to_thread(
                impressions_by_pair, self.folder, self.pairs, self.since
            )
            if min(counts) >= self.min_impressions:
                yield TriggerEvent({"ready": True, "impressions": counts})  # type: ignore[no-untyped-call]
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"ready": False, "impressions": counts})  # type: ignore[no-untyped-call]
                return
            self.log.info(
                "canary: %s impressions of %s each needed so far", counts, self.min_impressions
            )
            await asyncio.sleep(self.poll_seconds)
