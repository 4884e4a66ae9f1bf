"""The store's vocabulary, loaded from ``vocabulary.json``, and the tables derived from it.

``vocabulary.json`` holds the words of the made-up store: colours and materials, the
shorthand (``abbreviations``) and ``misspellings`` shoppers type, house brands, styles,
the syllables of model names, the closing sentences of descriptions, shoppers' first
and last names, and the product ``classes``. Order is part of the data: the random
draws index these lists, so reordering one changes every generated file.

In a class's ``colors``, ``materials`` and ``sizes``, ``"@name"`` stands for every
entry of ``palettes[name]``; in its ``sizes``, ``{"inches": [72, 84]}`` and
``{"counted": "shelf", "values": [3, 4]}`` stand for the sizes ``_inches`` and
``_counted`` spell out. A size is a pair: as printed in names and features, as written
in product copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import numpy as np


@dataclass(frozen=True)
class _ProductClass:
    """One product class of the store; ``house_terms`` never appear in product text."""

    name: str
    path: str
    weight: float
    nouns: tuple[str, ...]
    subtypes: tuple[str, ...]
    house_terms: tuple[str, ...]
    colors: tuple[str, ...]
    materials: tuple[str, ...]
    price: tuple[float, float]
    phrases: tuple[str, ...]
    room: str
    size_feature: str = ""
    # (as printed in names and features, as written in product copy); shoppers type the
    # copy form in lower case with hyphens as spaces, so no size token is store-only.
    sizes: tuple[tuple[str, str], ...] = ()
    extras: tuple[tuple[str, tuple[str, ...]], ...] = ()

    @property
    def parent(self) -> str:
        """The category one level up: classes sharing it are close siblings."""
        return self.path.rsplit(" / ", 1)[0]


def _inches(*values: int) -> tuple[tuple[str, str], ...]:
    return tuple((f'{v}"', f"{v} inch") for v in values)


def _counted(unit: str, *values: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{v}-{unit.title()}", f"{v} {unit}") for v in values)


def _spliced(items: list[Any], palettes: dict[str, list[Any]]) -> list[Any]:
    """``items`` with each ``"@name"`` replaced by the entries of ``palettes[name]``."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, str) and item.startswith("@"):
            out.extend(palettes[item[1:]])
        else:
            out.append(item)
    return out


def _sizes(items: list[Any], palettes: dict[str, list[Any]]) -> tuple[tuple[str, str], ...]:
    sizes: list[tuple[str, str]] = []
    for item in _spliced(items, palettes):
        if isinstance(item, dict) and "inches" in item:
            sizes.extend(_inches(*item["inches"]))
        elif isinstance(item, dict):
            sizes.extend(_counted(item["counted"], *item["values"]))
        else:
            printed, prose = item
            sizes.append((printed, prose))
    return tuple(sizes)


def _product_class(entry: dict[str, Any], palettes: dict[str, list[Any]]) -> _ProductClass:
    unknown = set(entry) - {f.name for f in fields(_ProductClass)}
    if unknown:
        raise ValueError(f"vocabulary.json: class {entry.get('name')!r} has unknown {unknown}")
    low, high = entry["price"]
    return _ProductClass(
        name=entry["name"],
        path=entry["path"],
        weight=entry["weight"],
        nouns=tuple(entry["nouns"]),
        subtypes=tuple(entry["subtypes"]),
        house_terms=tuple(entry["house_terms"]),
        colors=tuple(_spliced(entry["colors"], palettes)),
        materials=tuple(_spliced(entry["materials"], palettes)),
        price=(low, high),
        phrases=tuple(entry["phrases"]),
        room=entry["room"],
        size_feature=entry.get("size_feature", ""),
        sizes=_sizes(entry.get("sizes", []), palettes),
        extras=tuple((key, tuple(values)) for key, values in entry.get("extras", {}).items()),
    )


_VOCABULARY: dict[str, Any] = json.loads(
    resources.files("shelfguard.data.generator").joinpath("vocabulary.json").read_text("utf-8")
)

_COLORS: tuple[str, ...] = tuple(_VOCABULARY["colors"])
_MATERIALS: tuple[str, ...] = tuple(_VOCABULARY["materials"])
# Store shorthand that shoppers type and merchandisers use, but product copy never does.
_ABBREVIATIONS: dict[str, str] = _VOCABULARY["abbreviations"]
_MISSPELLINGS: dict[str, str] = _VOCABULARY["misspellings"]
_BRANDS: tuple[str, ...] = tuple(_VOCABULARY["brands"])
_STYLES: tuple[str, ...] = tuple(_VOCABULARY["styles"])
_MODELS = tuple(
    head + tail for head in _VOCABULARY["model_heads"] for tail in _VOCABULARY["model_tails"]
)
_CLOSERS: tuple[str, ...] = tuple(_VOCABULARY["closers"])
_FIRST_NAMES: tuple[str, ...] = tuple(_VOCABULARY["first_names"])
_LAST_NAMES: tuple[str, ...] = tuple(_VOCABULARY["last_names"])
_CLASSES: tuple[_ProductClass, ...] = tuple(
    _product_class(entry, _VOCABULARY["palettes"]) for entry in _VOCABULARY["classes"]
)

# Tables over the classes, for the vectorised draws.
_CLASS_INDEX = {pc.name: i for i, pc in enumerate(_CLASSES)}
_PARENTS = tuple(dict.fromkeys(pc.parent for pc in _CLASSES))
_PARENT_OF_CLASS = np.array([_PARENTS.index(pc.parent) for pc in _CLASSES], dtype=np.int16)
_CLASS_COLORS = tuple(np.array([_COLORS.index(c) for c in pc.colors]) for pc in _CLASSES)
_CLASS_MATERIALS = tuple(np.array([_MATERIALS.index(m) for m in pc.materials]) for pc in _CLASSES)
_SIBLINGS = tuple(
    tuple(j for j, other in enumerate(_CLASSES) if j != i and other.parent == pc.parent)
    for i, pc in enumerate(_CLASSES)
)
_SIBLING_COUNT = np.array([len(s) for s in _SIBLINGS], dtype=np.int64)
_SIBLING_TABLE = np.array(
    [[*s, *([0] * (int(_SIBLING_COUNT.max()) - len(s)))] for s in _SIBLINGS], dtype=np.int64
)
