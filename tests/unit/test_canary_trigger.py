"""The online gate's trigger: counts a canary's impressions in the served log's deliveries."""

from __future__ import annotations

import asyncio
import importlib
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from shelfguard.airflow.canary_trigger import CanaryTrigger
from shelfguard.serving.served_log import ServedLog

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
CHAMPION, CANARY = ["m1", "i1"], ["m2", "i2"]


def _serve(log: ServedLog, n: int, pair: list[str], at: datetime) -> None:
    for k in range(n):
        log.impression(
            f"{pair[0]}-{at:%H%M}-{k}",
            session_id=f"s{k}",
            user_id="u",
            query="desk",
            product_ids=[1, 2, 3, 4, 5],
            at=at,
            pair=(pair[0], pair[1]),
            arm="canary" if pair == CANARY else "champion",
        )


def _first_event(trigger: CanaryTrigger) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return asyncio.run(asyncio.wait_for(first(), timeout=30))


def test_it_fires_once_both_pairs_served_enough_since_the_canary_began(tmp_path: Path) -> None:
    log = ServedLog(tmp_path, click_window=1)
    _serve(log, 50, CHAMPION, T0 - timedelta(hours=1))  # before the canary: not counted
    _serve(log, 10, CHAMPION, T0)
    _serve(log, 10, CANARY, T0)
    assert log.rotate(now=T0 + timedelta(minutes=5)) is not None
    trigger = CanaryTrigger(
        folder=str(tmp_path),
        pairs=[CHAMPION, CANARY],
        min_impressions=50,
        deadline=time.time() + 60,
        since=T0.isoformat(),
        poll_seconds=0.05,
    )
    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (path, kwargs)
    assert _first_event(rebuilt) == {"ready": True, "impressions": [50, 50]}
    too_many = CanaryTrigger(**{**kwargs, "min_impressions": 51, "deadline": time.time() + 0.2})
    assert _first_event(too_many) == {"ready": False, "impressions": [50, 50]}
