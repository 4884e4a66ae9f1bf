"""The generator's random streams: one per stage and per defect, from one seed."""

from __future__ import annotations

import random

import numpy as np

from shelfguard.data.generator.defects import DEFECTS

_STREAMS = (
    "catalog", "text", "changes", "feed", "queries", "golden", "popularity", "labels",
    "searches", "users", "clicks", "ragged_search_log", *DEFECTS,
)  # fmt: skip


class _Streams:
    """Independent random streams per stage and per defect, each handed out once.

    Enabling a defect must not reshuffle the clean data around it, so each consumer
    draws from its own child of one seed sequence; handing a stream out twice would
    silently replay the same numbers in two places.
    """

    def __init__(self, seed: int, week: int = 1) -> None:
        self._seed = seed
        self._week = week
        self._issued: set[tuple[str, int]] = set()

    def _child(self, name: str, kind: int) -> np.random.SeedSequence:
        if (name, kind) in self._issued:
            raise RuntimeError(f"random stream {name!r} requested twice")
        self._issued.add((name, kind))
        key: tuple[int, ...] = (_STREAMS.index(name), kind)
        # Week 1 keeps the keys it always had (same seed, same bytes); later weeks draw
        # from streams of their own.
        if self._week > 1:
            key = (*key, self._week)
        return np.random.SeedSequence(self._seed, spawn_key=key)

    def numpy(self, name: str) -> np.random.Generator:
        return np.random.default_rng(self._child(name, 0))

    def python(self, name: str) -> random.Random:
        # random.Random is several times faster than numpy for scalar draws in row loops.
        state = self._child(name, 1).generate_state(2, np.uint64)
        return random.Random(int(state[0]) << 64 | int(state[1]))
