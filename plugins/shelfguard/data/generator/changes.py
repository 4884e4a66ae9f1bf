"""The catalog change feed: a week's edited rows, new products and deletions, written
to catalog_changes.csv."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from shelfguard.data.generator.catalog import _Attributes, _ChangePlan, _draw_attributes
from shelfguard.data.generator.files import _atomic_writer, _encode, _header
from shelfguard.data.generator.products import _product_fields, _ProductRow
from shelfguard.data.generator.streams import _Streams
from shelfguard.data.wands import CHANGE_COLUMNS, PRODUCT_COLUMNS

_CHANGE_WINDOW = timedelta(days=7)


def _updated_fields(fields: list[str], rnd: random.Random) -> list[str]:
    """A merchandiser's edit: new name, new description or new price (at least one)."""
    out = list(fields)
    edits = rnd.sample(("name", "description", "price"), k=rnd.randint(1, 2))
    if "name" in edits:
        out[1] = f"{out[1]} - {rnd.choice(('Signature', 'Limited', 'Studio'))} Edition"
    if "description" in edits:
        out[4] = f"{out[4]} Updated for the new season."
    if "price" in edits:
        features = out[5].split("|")
        for i, feature in enumerate(features):
            if feature.startswith("price:"):
                old = float(feature.removeprefix("price:"))
                new = max(4.99, round(old * rnd.uniform(0.75, 1.2)) - 0.01)
                features[i] = f"price:{new:.2f}"
        out[5] = "|".join(features)
    return out


@dataclass(frozen=True)
class _Feed:
    """A week's change feed: edited rows, new products (hidden and as rows), deletions."""

    updated: dict[int, list[str]]  # product id -> its edited product.csv fields
    added: _Attributes  # hidden attributes of the new products, ids first_new, ...
    added_fields: list[list[str]]
    deleted: list[int]

    @property
    def entries(self) -> list[tuple[str, list[str]]]:
        upserts = [*self.updated.values(), *self.added_fields]
        empty = [""] * (len(PRODUCT_COLUMNS) - 1)
        return [("upsert", f) for f in upserts] + [
            ("delete", [str(p), *empty]) for p in self.deleted
        ]


def _attribute_row(attrs: _Attributes, k: int, product_id: int) -> _ProductRow:
    return _ProductRow(
        product_id,
        int(attrs.cls[k]),
        int(attrs.color[k]),
        int(attrs.material[k]),
        int(attrs.size[k]),
        int(attrs.brand[k]),
        int(attrs.style[k]),
        int(attrs.model[k]),
        float(attrs.price[k]),
        int(attrs.rating_count[k]),
        float(attrs.average_rating[k]),
        int(attrs.review_count[k]),
    )


def _draw_feed(
    plan: _ChangePlan, captured: dict[int, list[str]], first_new: int, streams: _Streams
) -> tuple[_Feed, np.random.Generator]:
    """Draw the feed's edits and new products; return the stream that orders and stamps it."""
    rng = streams.numpy("feed")
    rnd = streams.python("feed")
    updated = {pid: _updated_fields(captured[pid], rnd) for pid in plan.updated.tolist()}
    fresh = _draw_attributes(plan.new_products, rng, shifted=False)
    added_fields = [
        _product_fields(_attribute_row(fresh, k, first_new + k), rnd)
        for k in range(plan.new_products)
    ]
    feed = _Feed(updated, fresh, added_fields, plan.deleted_ids.tolist())
    return feed, rng


def _write_changes(
    path: Path,
    feed: _Feed,
    rng: np.random.Generator,
    feed_start: datetime,
    first_change: int = 0,
) -> int:
    entries = feed.entries
    order = rng.permutation(len(entries))
    offsets = np.sort(rng.integers(0, int(_CHANGE_WINDOW.total_seconds()), size=len(entries)))
    base = np.datetime64(feed_start.replace(tzinfo=None), "s")
    stamps = np.datetime_as_string(base + offsets, unit="s").tolist()
    lines = [
        "\t".join([str(first_change + change_id + 1), f"{stamp}Z", entries[e][0], *entries[e][1]])
        for change_id, (e, stamp) in enumerate(zip(order.tolist(), stamps, strict=True))
    ]
    with _atomic_writer(path) as handle:
        handle.write(_header(CHANGE_COLUMNS))
        handle.write(_encode(lines))
    return len(lines)
