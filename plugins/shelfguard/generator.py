"""Synthetic store data in the WANDS layout, with a hidden ground truth and switchable defects.

``generate()`` writes five tab-separated files for a made-up furniture-and-home store:
the catalog (``product.csv``), the golden queries and their judgements (``query.csv``,
``label.csv``, the WANDS layout), impression-level search logs (``search_log.csv``) and a
catalog change feed (``catalog_changes.csv``).

Every product is drawn from a hidden ground truth: a product class (with a category path
whose parent groups close siblings), a colour, a material, an optional class-specific
size and a house brand. Every query is rendered from a hidden intent over the same
attributes, in the store's own vocabulary: in-house names for product types that never
appear in product text ("snuggler" for a loveseat), abbreviations ("blk", "qn", "ss"),
house brands and misspellings. Judgements and clicks both derive from that truth, so a
model fine-tuned on the click logs can learn the vocabulary and be measured on the golden
set, which uses different query texts and intents than the logs.

Nothing is read from disk and nothing depends on the clock: the same arguments give
byte-identical files. Defects (see ``DEFECTS``) inject the faults the ingest contract and
the Great Expectations gates must catch.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "CHANGE_COLUMNS",
    "DEFECTS",
    "FILES",
    "LABEL_COLUMNS",
    "MIN_PRODUCTS",
    "MIN_SEARCHES",
    "PRODUCT_COLUMNS",
    "QUERY_COLUMNS",
    "SEARCH_LOG_COLUMNS",
    "GenerateResult",
    "StoreTruth",
    "click_outcomes",
    "default_searches",
    "examination",
    "generate",
    "store_truth",
]

DEFECTS: dict[str, str] = {
    "duplicate_ids": "product.csv repeats 3% of product_ids as a later row with changed text",
    "empty_names": "3% of product.csv rows have an empty product_name",
    "bad_numbers": "3% of product.csv rows have an unparseable rating/review number",
    "out_of_range": "3% of product.csv rows have an impossible rating or negative count",
    "schema_missing": "product.csv lacks the product_class column",
    "schema_renamed": "product.csv calls product_name product_title",
    "schema_extra": "product.csv gains an extra internal_notes column at the end",
    "bad_utf8": "2.5% of product.csv rows carry invalid UTF-8 bytes in name or description",
    "ragged_rows": "~2.5% of product.csv and search_log.csv lines have too few or too many fields",
    "orphan_judgements": "~4% of label.csv rows point at product_ids that do not exist",
    "golden_leak": "3% of searches in search_log.csv use golden query texts",
    "category_shift": "one class (Area Rugs) makes up half of product.csv",
}

PRODUCT_COLUMNS = [
    "product_id",
    "product_name",
    "product_class",
    "category_hierarchy",
    "product_description",
    "product_features",
    "rating_count",
    "average_rating",
    "review_count",
]
QUERY_COLUMNS = ["query_id", "query", "query_class"]
LABEL_COLUMNS = ["id", "query_id", "product_id", "label"]
SEARCH_LOG_COLUMNS = [
    "search_id",
    "session_id",
    "user_id",
    "user_email",
    "searched_at",
    "query",
    "product_id",
    "position",
    "clicked",
    "added_to_cart",
    "purchased",
]
CHANGE_COLUMNS = ["change_id", "changed_at", "op", *PRODUCT_COLUMNS]
FILES = {
    "product": "product.csv",
    "query": "query.csv",
    "label": "label.csv",
    "search_log": "search_log.csv",
    "catalog_changes": "catalog_changes.csv",
}

MIN_PRODUCTS = 50
MIN_SEARCHES = 100
_MAX_DEFAULT_SEARCHES = 200_000

ProgressCallback = Callable[[str, int, int], None]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class GenerateResult:
    """What ``generate`` wrote: the folder, each file, its data-row count and the defects."""

    out_dir: Path
    files: dict[str, Path]
    rows: dict[str, int]
    defects: tuple[str, ...]


# ---------------------------------------------------------------------------------------
# The store: attribute vocabularies and product classes
# ---------------------------------------------------------------------------------------

_COLORS = (
    "Black", "White", "Grey", "Navy", "Beige", "Brown", "Green", "Blue", "Cream", "Charcoal",
    "Ivory", "Teal", "Blush", "Mustard", "Gold", "Silver", "Natural", "Rust", "Chrome",
    "Brushed Nickel",
)  # fmt: skip
_MATERIALS = (
    "Velvet", "Leather", "Faux Leather", "Linen", "Boucle", "Microfiber", "Polyester", "Wood",
    "Oak", "Walnut", "Acacia", "Pine", "Teak", "Metal", "Iron", "Stainless Steel", "Brass",
    "Glass", "Marble", "Rattan", "Wicker", "Wool", "Cotton", "Jute", "Polypropylene",
    "Ceramic", "Aluminum", "Bamboo", "Resin", "Coir",
)  # fmt: skip
# Store shorthand that shoppers type and merchandisers use, but product copy never does.
_ABBREVIATIONS = {
    "black": "blk", "white": "wht", "grey": "gry", "navy": "nvy", "beige": "bge",
    "brown": "brn", "green": "grn", "charcoal": "chrcl", "brushed nickel": "bn",
    "velvet": "vlvt", "leather": "lthr", "faux leather": "faux lthr", "wood": "wd",
    "walnut": "wlnt", "metal": "mtl", "stainless steel": "ss", "polyester": "poly",
    "microfiber": "micro", "aluminum": "alum", "polypropylene": "pp", "marble": "mrbl",
    "queen": "qn", "king": "kg", "california king": "cal kg", "twin": "twn",
}  # fmt: skip
_MISSPELLINGS = {
    "chandelier": "chandeleir", "dresser": "dreser", "ottoman": "ottomon",
    "recliner": "recliener", "sectional": "sectonal", "mirror": "miror", "pillow": "pilow",
    "leather": "lether", "velvet": "velvit", "table": "tabel", "console": "consle",
    "headboard": "headbord", "beige": "biege", "stool": "stoll", "nightstand": "nighstand",
    "loveseat": "lovseat", "bookcase": "bookcse", "sideboard": "sidebord", "charcoal": "charcol",
}  # fmt: skip
_BRANDS = (
    "Hearthmoor", "Larkfield & Co", "Brindle & Oak", "Sable Row", "Wrenhaven", "Ostwick",
    "Calder Lane", "Pemberly Home", "Ashgrove Studio", "Thistledown", "Marlowe Mercantile",
    "Kestrel Bay", "Fernwick", "Tidewell", "Quillon House", "Juniper Kiln",
)  # fmt: skip
_STYLES = (
    "Modern", "Mid-Century Modern", "Farmhouse", "Coastal", "Industrial", "Traditional", "Glam",
    "Scandinavian", "Rustic", "Bohemian",
)  # fmt: skip
_MODEL_HEADS = (
    "Al", "Bren", "Cal", "Dor", "El", "Fen", "Gar", "Hal", "Is", "Jun", "Kes", "Lor", "Mar",
    "Nor", "Os", "Per", "Quin", "Ros", "Sel", "Tam", "Ul", "Ver", "Wes", "Yar",
)  # fmt: skip
_MODEL_TAILS = (
    "dous", "ley", "ton", "wick", "mere", "ford", "ina", "ric", "by", "den", "worth", "ara",
    "ell", "ston", "more",
)  # fmt: skip
_MODELS = tuple(head + tail for head in _MODEL_HEADS for tail in _MODEL_TAILS)
_CLOSERS = (
    "Backed by a one-year warranty.", "Ships in one box.", "Exclusive to our store.",
    "A customer favourite.", "Free returns within 30 days.",
)  # fmt: skip
_FIRST_NAMES = (
    "olivia", "liam", "emma", "noah", "amara", "mateo", "sofia", "kenji", "chloe", "omar",
    "grace", "lucas", "maya", "ethan", "zara", "diego", "ava", "felix", "nina", "samuel",
    "leila", "oscar", "hana", "isaac", "ruby", "tomas", "ines", "jonah", "priya", "marco",
)  # fmt: skip
_LAST_NAMES = (
    "smith", "garcia", "chen", "okafor", "muller", "rossi", "kowalski", "nguyen", "silva",
    "haddad", "johnson", "kim", "patel", "novak", "brown", "jensen", "moreau", "tanaka",
    "walsh", "ibrahim", "lopez", "fischer", "costa", "larsen", "dubois", "sato", "reyes",
)  # fmt: skip

_UPHOLSTERY = (
    "Grey", "Navy", "Beige", "Cream", "Charcoal", "Green", "Blue", "Blush", "Mustard", "Ivory",
    "Brown", "Black", "Teal", "Rust",
)  # fmt: skip
_WOOD_TONES = ("Natural", "Brown", "Black", "White", "Grey")
_METAL_TONES = ("Black", "Gold", "Silver", "Chrome", "Brushed Nickel", "White")
_TEXTILE = (
    "White", "Ivory", "Grey", "Navy", "Blue", "Green", "Blush", "Mustard", "Teal", "Rust",
    "Beige", "Black", "Charcoal",
)  # fmt: skip
_RUG = ("Ivory", "Grey", "Navy", "Blue", "Beige", "Rust", "Green", "Charcoal", "Teal", "Cream")
_OUTDOOR = ("Grey", "Brown", "Beige", "Navy", "White", "Black", "Green")
_FABRICS = ("Velvet", "Leather", "Faux Leather", "Linen", "Boucle", "Microfiber", "Polyester")
_CASEGOODS = ("Wood", "Oak", "Walnut", "Acacia", "Pine")
_BED_SIZES = (("Twin", "twin"), ("Full", "full"), ("Queen", "queen"), ("King", "king"))


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


_CLASSES: tuple[_ProductClass, ...] = (
    _ProductClass(
        "Sofas", "Furniture / Sofas & Sectionals / Sofas", 6.0, ("sofa",),
        ("Sofa", "Chesterfield Sofa", "Sleeper Sofa", "Tuxedo Arm Sofa", "Track Arm Sofa",
         "Camelback Sofa"),
        ("sprawler",), _UPHOLSTERY, _FABRICS, (399, 2899),
        ("with deep seats and plush cushions", "on a kiln-dried hardwood frame"), "living room",
        "width", _inches(72, 84, 96), (("seats", ("3", "4")),),
    ),
    _ProductClass(
        "Sectionals", "Furniture / Sofas & Sectionals / Sectionals", 4.0, ("sectional",),
        ("Sectional", "Modular Sectional", "Sleeper Sectional", "Chaise Sectional"),
        ("wraparound",), _UPHOLSTERY, _FABRICS, (799, 3999),
        ("with reversible chaise cushions", "built for movie nights"), "family room",
        "shape", (("L-Shaped", "L-shaped"), ("U-Shaped", "U-shaped"), ("Curved", "curved")),
        (("seats", ("5", "6", "7")),),
    ),
    _ProductClass(
        "Loveseats", "Furniture / Sofas & Sectionals / Loveseats", 3.0, ("loveseat",),
        ("Loveseat", "Rolled Arm Loveseat", "Reclining Loveseat"),
        ("snuggler",), _UPHOLSTERY, _FABRICS, (299, 1499),
        ("sized for two", "with pocket-coil seat cushions"), "apartment", "width",
        _inches(52, 60, 66),
    ),
    _ProductClass(
        "Accent Chairs", "Furniture / Chairs & Seating / Accent Chairs", 5.0,
        ("accent chair", "armchair"),
        ("Accent Chair", "Armchair", "Wingback Chair", "Barrel Chair", "Slipper Chair"),
        ("perch chair",), _UPHOLSTERY, (*_FABRICS, "Rattan"), (129, 999),
        ("with a sculpted back and tapered legs", "that anchors a reading corner"),
        "living room", extras=(("arm_style", ("Track", "Rolled", "Armless")),),
    ),
    _ProductClass(
        "Recliners", "Furniture / Chairs & Seating / Recliners", 3.0, ("recliner",),
        ("Recliner", "Power Recliner", "Wall Hugger Recliner", "Rocker Recliner"),
        ("kickback",), _UPHOLSTERY, ("Leather", "Faux Leather", "Microfiber", "Polyester"),
        (249, 1399), ("with a smooth glide mechanism", "with padded arms and footrest"), "den",
        extras=(("recline", ("Manual", "Power")),),
    ),
    _ProductClass(
        "Ottomans", "Furniture / Chairs & Seating / Ottomans", 2.5, ("ottoman",),
        ("Ottoman", "Storage Ottoman", "Cocktail Ottoman", "Round Ottoman"),
        ("footpouf",), _UPHOLSTERY, (*_FABRICS, "Jute"), (69, 499),
        ("with a hinged lid for hidden storage", "that doubles as extra seating"),
        "living room",
    ),
    _ProductClass(
        "Bean Bag Chairs", "Furniture / Chairs & Seating / Bean Bag Chairs", 1.5, ("bean bag",),
        ("Bean Bag Chair", "Bean Bag Sofa", "Giant Bean Bag"),
        ("cloud seat",), _TEXTILE, ("Microfiber", "Polyester", "Faux Leather", "Cotton"),
        (49, 399), ("filled with shredded foam", "with a removable washable cover"),
        "game room",
    ),
    _ProductClass(
        "Coffee & Cocktail Tables", "Furniture / Living Room Tables / Coffee & Cocktail Tables",
        5.0, ("coffee table",),
        ("Coffee Table", "Lift Top Coffee Table", "Trunk Coffee Table", "Round Coffee Table"),
        ("mug deck",), _WOOD_TONES, (*_CASEGOODS, "Marble", "Glass", "Metal"), (99, 1199),
        ("with a lower shelf for magazines", "with softly rounded corners"), "living room",
        extras=(("shape", ("Round", "Rectangular", "Oval")),),
    ),
    _ProductClass(
        "End Tables", "Furniture / Living Room Tables / End Tables", 4.0,
        ("end table", "side table"), ("End Table", "Side Table", "C-Shaped End Table"),
        ("elbow table",), _WOOD_TONES, (*_CASEGOODS, "Marble", "Metal"), (49, 499),
        ("sized for a lamp and a drink", "with a slim drawer"), "living room",
    ),
    _ProductClass(
        "Sofa & Console Tables", "Furniture / Living Room Tables / Sofa & Console Tables", 2.5,
        ("console table",), ("Console Table", "Entryway Console Table", "Narrow Console Table"),
        ("hall runner",), _WOOD_TONES, (*_CASEGOODS, "Metal", "Glass"), (99, 899),
        ("with an open bottom shelf", "for a narrow entryway"), "hallway",
    ),
    _ProductClass(
        "TV Stands & Entertainment Centers",
        "Furniture / Living Room Storage / TV Stands & Entertainment Centers", 4.0,
        ("tv stand", "entertainment center"), ("TV Stand", "Entertainment Center", "Media TV Stand"),
        ("telly bench",), _WOOD_TONES, (*_CASEGOODS, "Metal"), (99, 1299),
        ("with cable management cut-outs", "with sliding barn doors"), "living room",
        "tv_size", _inches(55, 65, 75),
    ),
    _ProductClass(
        "Bookcases", "Furniture / Living Room Storage / Bookcases", 3.0, ("bookcase",),
        ("Bookcase", "Etagere Bookcase", "Ladder Bookcase", "Standard Bookcase"),
        ("tome tower",), _WOOD_TONES, (*_CASEGOODS, "Metal"), (79, 899),
        ("with adjustable shelves", "with anti-tip hardware included"), "study", "shelves",
        _counted("shelf", 3, 4, 5),
    ),
    _ProductClass(
        "Beds", "Furniture / Bedroom Furniture / Beds", 5.0, ("bed",),
        ("Platform Bed", "Panel Bed", "Canopy Bed", "Sleigh Bed", "Storage Bed"),
        ("sleep deck",), (*_WOOD_TONES, "Navy", "Beige"), (*_CASEGOODS, "Velvet", "Linen", "Metal"),
        (249, 2499), ("with a slatted base so no box spring is needed", "with a tall frame"),
        "bedroom", "bed_size", (*_BED_SIZES, ("California King", "california king")),
    ),
    _ProductClass(
        "Headboards", "Furniture / Bedroom Furniture / Headboards", 2.0, ("headboard",),
        ("Headboard", "Panel Headboard", "Arched Headboard", "Wingback Headboard"),
        ("bed crown",), _UPHOLSTERY, ("Velvet", "Linen", "Boucle", "Wood", "Metal"), (99, 799),
        ("with channel tufting", "that bolts to most frames"), "bedroom", "bed_size", _BED_SIZES,
    ),
    _ProductClass(
        "Nightstands", "Furniture / Bedroom Furniture / Nightstands", 3.0, ("nightstand",),
        ("Nightstand", "2-Drawer Nightstand", "Floating Nightstand"),
        ("bedbuddy",), _WOOD_TONES, (*_CASEGOODS, "Rattan", "Metal"), (59, 599),
        ("with a built-in USB port", "with soft-close drawers"), "bedroom",
    ),
    _ProductClass(
        "Dressers & Chests", "Furniture / Bedroom Furniture / Dressers & Chests", 4.0,
        ("dresser", "chest"), ("Dresser", "Double Dresser", "Chest of Drawers", "Tall Chest"),
        ("keepall",), _WOOD_TONES, _CASEGOODS, (149, 1799),
        ("with dovetail drawer joints", "with felt-lined top drawers"), "bedroom", "drawers",
        _counted("drawer", 3, 5, 6, 9),
    ),
    _ProductClass(
        "Dining Tables", "Furniture / Kitchen & Dining Furniture / Dining Tables", 4.0,
        ("dining table",),
        ("Dining Table", "Extendable Dining Table", "Pedestal Dining Table", "Trestle Dining Table"),
        ("feast table",), _WOOD_TONES, (*_CASEGOODS, "Marble", "Glass"), (199, 2199),
        ("with a butterfly leaf", "with a sturdy trestle base"), "dining room", "seating",
        _counted("seater", 4, 6, 8),
    ),
    _ProductClass(
        "Dining Chairs", "Furniture / Kitchen & Dining Furniture / Dining Chairs", 4.0,
        ("dining chair",),
        ("Dining Chair", "Parsons Dining Chair", "Windsor Dining Chair", "Slat Back Dining Chair"),
        ("supper chair",), (*_WOOD_TONES, "Grey", "Navy", "Cream"),
        ("Wood", "Oak", "Velvet", "Linen", "Metal", "Rattan"), (59, 449),
        ("sold as a set of two", "with a contoured seat"), "dining room",
        extras=(("pieces", ("1", "2", "4")),),
    ),
    _ProductClass(
        "Bar Stools", "Furniture / Kitchen & Dining Furniture / Bar Stools", 3.5,
        ("bar stool", "counter stool"), ("Bar Stool", "Swivel Bar Stool", "Backless Bar Stool"),
        ("highhat",), (*_METAL_TONES, "Natural", "Brown"),
        ("Metal", "Wood", "Faux Leather", "Velvet", "Rattan"), (49, 399),
        ("with a built-in footrest", "with a 360-degree swivel"), "kitchen", "height",
        (("Counter Height", "counter height"), ("Bar Height", "bar height")),
    ),
    _ProductClass(
        "Sideboards & Buffets", "Furniture / Kitchen & Dining Furniture / Sideboards & Buffets",
        2.5, ("sideboard", "buffet"), ("Sideboard", "Buffet", "Buffet Sideboard"),
        ("spreadboard",), _WOOD_TONES, (*_CASEGOODS, "Rattan"), (199, 1599),
        ("with adjustable interior shelves", "with a wine rack"), "dining room",
    ),
    _ProductClass(
        "Desks", "Furniture / Office Furniture / Desks", 4.0, ("desk",),
        ("Desk", "Writing Desk", "Computer Desk", "Executive Desk"),
        ("workdeck",), _WOOD_TONES, (*_CASEGOODS, "Metal", "Glass"), (99, 1499),
        ("with a keyboard tray", "with a built-in cable grommet"), "home office", "shape",
        (("L-Shaped", "L-shaped"), ("Standing", "standing"), ("Corner", "corner")),
    ),
    _ProductClass(
        "Office Chairs", "Furniture / Office Furniture / Office Chairs", 3.5,
        ("office chair", "desk chair"),
        ("Office Chair", "Task Chair", "Executive Office Chair", "Ergonomic Mesh Chair"),
        ("swivvy",), ("Black", "Grey", "White", "Blue", "Brown"),
        ("Faux Leather", "Leather", "Polyester", "Velvet"), (79, 899),
        ("with adjustable lumbar support", "with height-adjustable arms"), "home office",
    ),
    _ProductClass(
        "Patio Sofas", "Outdoor / Patio Furniture / Patio Sofas", 2.5,
        ("patio sofa", "outdoor sofa"), ("Patio Sofa", "Outdoor Sofa", "Deep Seating Patio Sofa"),
        ("porch lounger",), _OUTDOOR, ("Wicker", "Teak", "Aluminum", "Acacia", "Resin"),
        (299, 2499), ("with fade-resistant cushions", "that shrugs off rain"), "patio",
    ),
    _ProductClass(
        "Outdoor Conversation Sets",
        "Outdoor / Patio Furniture / Outdoor Conversation Sets", 2.5,
        ("conversation set", "patio set"),
        ("4-Piece Conversation Set", "Patio Conversation Set", "5-Piece Seating Group"),
        ("chat circle",), _OUTDOOR, ("Wicker", "Teak", "Aluminum", "Acacia", "Resin"),
        (399, 2999), ("with cushions and a coffee table", "for a deck or balcony"), "backyard",
    ),
    _ProductClass(
        "Accent Pillows", "Décor & Pillows / Accent Pillows", 4.0, ("throw pillow", "pillow"),
        ("Throw Pillow", "Lumbar Pillow", "Square Throw Pillow", "Decorative Pillow"),
        ("throwie",), _TEXTILE, ("Velvet", "Linen", "Cotton", "Wool", "Polyester", "Boucle"),
        (19, 119), ("with a hidden zipper", "with a feather-down insert"), "sofa corner",
        "size", _counted("inch", 18, 20, 22),
    ),
    _ProductClass(
        "Wall & Accent Mirrors", "Décor & Pillows / Wall & Accent Mirrors", 3.0, ("mirror",),
        ("Wall Mirror", "Round Mirror", "Full Length Mirror", "Arched Mirror", "Sunburst Mirror"),
        ("glow glass",), _METAL_TONES, ("Metal", "Wood", "Rattan", "Iron", "Brass"), (39, 699),
        ("with a beveled edge", "that brightens a dark hallway"), "entryway",
    ),
    _ProductClass(
        "Area Rugs", "Rugs / Area Rugs", 5.0, ("area rug", "rug"),
        ("Area Rug", "Flatweave Area Rug", "Shag Area Rug", "Oriental Area Rug"),
        ("underfoot",), _RUG, ("Wool", "Cotton", "Jute", "Polypropylene", "Polyester"),
        (39, 1299), ("with a low pile that suits busy rooms", "hand-tufted by artisans"),
        "living room", "rug_size",
        (("5' x 8'", "5x8"), ("8' x 10'", "8x10"), ("9' x 12'", "9x12"), ("2' x 8'", "2x8")),
    ),
    _ProductClass(
        "Door Mats", "Rugs / Door Mats", 1.5, ("doormat",),
        ("Doormat", "Non-Slip Doormat", "Outdoor Doormat"),
        ("welcomer",), ("Natural", "Black", "Grey", "Brown"), ("Coir", "Polypropylene", "Jute"),
        (15, 89), ("that traps mud at the front step", "with a non-slip backing"), "front porch",
    ),
    _ProductClass(
        "Table Lamps", "Lighting / Lamps / Table Lamps", 3.0, ("table lamp", "lamp"),
        ("Table Lamp", "Buffet Table Lamp", "Bedside Table Lamp"),
        ("glowpot",), (*_METAL_TONES, "Cream"), ("Ceramic", "Brass", "Glass", "Metal", "Wood"),
        (29, 349), ("with a linen drum shade", "with a three-way switch"), "bedroom", "height",
        _counted("inch", 24, 28, 32),
    ),
    _ProductClass(
        "Floor Lamps", "Lighting / Lamps / Floor Lamps", 2.0, ("floor lamp",),
        ("Floor Lamp", "Arc Floor Lamp", "Tripod Floor Lamp", "Torchiere Floor Lamp"),
        ("tallglow",), _METAL_TONES, ("Metal", "Brass", "Wood", "Iron"), (49, 499),
        ("with a weighted base", "with a foot switch"), "living room",
    ),
    _ProductClass(
        "Chandeliers", "Lighting / Ceiling Lights / Chandeliers", 2.5, ("chandelier",),
        ("Chandelier", "Sputnik Chandelier", "Drum Chandelier", "Candle Style Chandelier"),
        ("sparkler",), _METAL_TONES, ("Iron", "Brass", "Glass", "Metal"), (99, 1999),
        ("with dimmable bulbs", "with an adjustable chain"), "dining room", "lights",
        _counted("light", 3, 6, 8, 12),
    ),
    _ProductClass(
        "Flush Mount Lighting", "Lighting / Ceiling Lights / Flush Mount Lighting", 2.0,
        ("flush mount",), ("Flush Mount", "LED Flush Mount", "Semi Flush Mount"),
        ("ceiling puck",), _METAL_TONES, ("Metal", "Glass", "Brass"), (29, 399),
        ("for low ceilings", "with a frosted glass diffuser"), "hallway",
    ),
    _ProductClass(
        "Bedding Sets", "Bed & Bath / Bedding / Bedding Sets", 3.0,
        ("comforter set", "bedding set"), ("Comforter Set", "Duvet Cover Set", "Quilt Set"),
        ("dreamset",), _TEXTILE, ("Cotton", "Linen", "Microfiber", "Polyester"), (39, 399),
        ("with matching shams", "that softens with every wash"), "bedroom", "bed_size",
        _BED_SIZES,
    ),
    _ProductClass(
        "Sheets And Sheet Sets", "Bed & Bath / Bedding / Sheets And Sheet Sets", 2.5,
        ("sheet set", "sheets"), ("Sheet Set", "Percale Sheet Set", "Sateen Sheet Set"),
        ("slipweave",), _TEXTILE, ("Cotton", "Linen", "Microfiber", "Bamboo"), (29, 299),
        ("with deep elastic pockets", "that stays cool at night"), "bedroom", "bed_size",
        _BED_SIZES,
    ),
    _ProductClass(
        "Shoe Storage", "Storage & Organization / Shoe Storage", 2.0, ("shoe rack",),
        ("Shoe Rack", "Shoe Storage Cabinet", "Shoe Storage Bench"),
        ("boot bay",), _WOOD_TONES, ("Wood", "Bamboo", "Metal", "Pine"), (29, 399),
        ("that keeps the entry tidy", "with tilt-out compartments"), "entryway", "pairs",
        _counted("pair", 12, 20, 30),
    ),
    _ProductClass(
        "Hampers & Baskets", "Storage & Organization / Hampers & Baskets", 2.0,
        ("hamper", "basket"), ("Laundry Hamper", "Storage Basket", "Hamper with Lid"),
        ("togs tote",), (*_WOOD_TONES, "Beige"), ("Wicker", "Jute", "Cotton", "Bamboo", "Rattan"),
        (19, 149), ("with a removable liner", "with sturdy side handles"), "laundry room",
    ),
)  # fmt: skip

_SHIFTED_CLASS = "Area Rugs"
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

# "Text is data": strings that break naive SQL, spreadsheets and renderers, yet are valid
# UTF-8 without tabs or newlines, so they must survive every stage untouched.
# Each is (field index, template); "{}" in the template stands for the generated value.
_TEXT_IS_DATA = (
    (1, "'); DROP TABLE products;--"),
    (1, '=HYPERLINK("x") {}'),
    (4, "{} Cozy vibes only 😍🛋️ — our most-loved pick ✨."),
    (4, "{} ספה נוחה לסלון."),
    (1, "{} أريكة مريحة"),
    (4, "{} <script>alert('x')</script> \"Quoted\" and 'single' quotes are literal."),
)

# Ground truth grades: 2 = Exact, 1 = Partial, 0 = Irrelevant.
_LABEL_NAMES = ("Irrelevant", "Partial", "Exact")
# Click model (position-based): P(click) = examination(position) * attractiveness(grade).
_EXAMINATION_POWER = 0.8
_ATTRACTIVENESS = np.array([0.04, 0.28, 0.75])
_P_CART_GIVEN_CLICK = np.array([0.01, 0.06, 0.22])
_P_PURCHASE_GIVEN_CART = np.array([0.05, 0.20, 0.45])
_IMPRESSIONS_PER_SEARCH = 10
_RANKER_NOISE = 0.9
# Where the noisy ranker's candidates come from: exact matches, same class, sibling class,
# anywhere in the catalog.
_CANDIDATE_SOURCES = np.array([0.35, 0.30, 0.15, 0.20])
_EXACT_POOL = 32

# Query rendering: how often each kind of store vocabulary is used.
_P_HOUSE_TERM = 0.15
_P_ABBREVIATE = 0.2
_P_TYPO = 0.12
_P_NOUN_FIRST = 0.15
_ZIPF_EXPONENT = 0.85
_CONSTRAINT_PROBABILITIES = {"color": 0.4, "material": 0.3, "size": 0.25, "brand": 0.07}

_SEARCH_WINDOW = timedelta(days=28)
_CHANGE_WINDOW = timedelta(days=7)
_CHUNK_ROWS = 10_000
_SEARCH_CHUNK = _CHUNK_ROWS // _IMPRESSIONS_PER_SEARCH

_DEFECT_RATES = {
    "duplicate_ids": 0.03,
    "empty_names": 0.03,
    "bad_numbers": 0.03,
    "out_of_range": 0.03,
    "bad_utf8": 0.025,
    "ragged_rows": 0.025,
    "orphan_judgements": 0.04,
    "golden_leak": 0.03,
}
_BAD_NUMBERS = ("four", "4,5", "n/a", "12a", "4.5.1", "--", "NaN?")
# NUL never occurs in generated text, so it marks where raw invalid bytes go after encoding.
_BAD_UTF8_MARKERS = {"\x00\x01": b"\xff\xfe", "\x00\x02": b"\xc3"}

_ROW_DEFECTS = (
    "duplicate_ids", "empty_names", "bad_numbers", "out_of_range", "bad_utf8", "ragged_rows",
)  # fmt: skip
_STREAMS = (
    "catalog", "text", "changes", "feed", "queries", "golden", "popularity", "labels",
    "searches", "users", "clicks", "ragged_search_log", *DEFECTS,
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------


def default_searches(products: int) -> int:
    """Searches generated when ``searches`` is not given: enough clicks to fine-tune on."""
    return min(max(5_000, 4 * products), _MAX_DEFAULT_SEARCHES)


def generate(
    out_dir: Path,
    products: int = 2000,
    seed: int = 42,
    defects: Sequence[str] = (),
    searches: int | None = None,
    progress: ProgressCallback | None = None,
    week: int = 1,
) -> GenerateResult:
    """Write the five store files into ``out_dir`` and return what was written.

    ``products`` catalog rows (before defects) are drawn from the hidden ground truth;
    ``searches`` searches of ten impressions each go to the log (default:
    ``default_searches(products)``). ``defects`` names entries of ``DEFECTS`` to inject.
    ``progress(stage, done, total)`` is called about every 10,000 rows, ``stage`` being a
    key of ``FILES``. ``week`` N > 1 writes the same store N - 1 weeks later
    (``shelfguard.store_weeks``: the earlier weeks' change feeds applied, ids that never
    repeat an earlier week's). Same arguments, same bytes. Raises ``ValueError`` for bad
    arguments.
    """
    from shelfguard import store_weeks

    chosen = _validate(products, seed, defects, searches)
    store_weeks.validate_week(week, chosen)
    n_searches = default_searches(products) if searches is None else searches
    report: ProgressCallback = progress if progress is not None else _ignore_progress
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {key: out / name for key, name in FILES.items()}
    if week > 1:
        written = store_weeks.write_week(files, products, seed, n_searches, week, report)
        return GenerateResult(out_dir=out, files=files, rows=written, defects=())

    streams, catalog, plan, queries = _draw_store(
        products, seed, n_searches, "category_shift" in chosen
    )
    window_start = first_window(seed)

    rows: dict[str, int] = {}
    rows["product"], captured = _write_products(
        files["product"], catalog, plan, chosen, streams, report
    )
    rows["query"] = _write_queries(files["query"], queries)
    report("query", rows["query"], rows["query"])
    rows["label"] = _write_labels(files["label"], catalog, plan, queries, chosen, streams)
    report("label", rows["label"], rows["label"])
    rows["search_log"] = _write_search_log(
        files["search_log"], catalog, queries, n_searches, window_start, chosen, streams, report
    )
    feed, feed_rng = _draw_feed(plan, captured, catalog.size_of_catalog, streams)
    rows["catalog_changes"] = _write_changes(
        files["catalog_changes"], feed, feed_rng, window_start + _SEARCH_WINDOW
    )
    report("catalog_changes", rows["catalog_changes"], rows["catalog_changes"])
    return GenerateResult(out_dir=out, files=files, rows=rows, defects=chosen)


def _draw_store(
    products: int, seed: int, n_searches: int, shifted: bool
) -> tuple[_Streams, _Catalog, _ChangePlan, _Queries]:
    """Week 1's hidden store: its streams, catalog, change plan and queries."""
    streams = _Streams(seed)
    catalog = _build_catalog(products, streams.numpy("catalog"), shifted)
    plan = _plan_changes(np.ones(catalog.size_of_catalog, dtype=np.bool_), streams.numpy("changes"))
    queries = _build_queries(catalog, plan.deleted, n_searches, streams)
    return streams, catalog, plan, queries


def first_window(seed: int) -> datetime:
    """When week 1's searches of the store drawn from ``seed`` begin."""
    return datetime(2026, 9, 1, tzinfo=UTC) + timedelta(days=seed % 61)


def _ignore_progress(stage: str, done: int, total: int) -> None:
    del stage, done, total


def _validate(
    products: int, seed: int, defects: Sequence[str], searches: int | None
) -> tuple[str, ...]:
    if isinstance(products, bool) or not isinstance(products, int):
        raise ValueError(f"products must be an integer, got {products!r}")
    if products < MIN_PRODUCTS:
        raise ValueError(
            f"products must be at least {MIN_PRODUCTS} (one per product class plus a golden "
            f"set), got {products}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if searches is not None and (
        isinstance(searches, bool) or not isinstance(searches, int) or searches < MIN_SEARCHES
    ):
        raise ValueError(f"searches must be None or an integer >= {MIN_SEARCHES}, got {searches!r}")
    if isinstance(defects, str | bytes):
        raise ValueError(
            f"defects must be a sequence of defect names, not the string {defects!r} "
            f"(did you mean [{defects!r}]?)"
        )
    unknown = [name for name in defects if name not in DEFECTS]
    if unknown:
        raise ValueError(
            f"unknown defect(s): {', '.join(map(repr, unknown))}; known defects: "
            f"{', '.join(DEFECTS)}"
        )
    requested = set(defects)
    return tuple(name for name in DEFECTS if name in requested)


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


@contextmanager
def _atomic_writer(path: Path) -> Iterator[BinaryIO]:
    """Write to a sibling temp file and rename, so readers never see half a file."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _header(columns: Sequence[str]) -> bytes:
    return ("\t".join(columns) + "\n").encode()


# ---------------------------------------------------------------------------------------
# Catalog: the hidden ground truth, held as compact arrays
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Catalog:
    """Per-product hidden attributes; the product_id is the index."""

    cls: npt.NDArray[np.int16]
    color: npt.NDArray[np.int16]
    material: npt.NDArray[np.int16]
    size: npt.NDArray[np.int16]  # index into the class's sizes, -1 if the class has none
    brand: npt.NDArray[np.int16]
    style: npt.NDArray[np.int16]
    model: npt.NDArray[np.int16]
    price: npt.NDArray[np.float64]
    rating_count: npt.NDArray[np.int32]  # -1 means not rated (empty field)
    average_rating: npt.NDArray[np.float64]
    review_count: npt.NDArray[np.int32]
    order: IntArray  # product ids grouped by class
    start: IntArray
    count: IntArray

    @property
    def size_of_catalog(self) -> int:
        return int(self.cls.shape[0])

    def members(self, cls: int) -> IntArray:
        """All product ids of one class."""
        begin = int(self.start[cls])
        return self.order[begin : begin + int(self.count[cls])]


@dataclass(frozen=True)
class _Attributes:
    cls: IntArray
    color: IntArray
    material: IntArray
    size: IntArray
    brand: IntArray
    style: IntArray
    model: IntArray
    price: npt.NDArray[np.float64]
    rating_count: IntArray
    average_rating: npt.NDArray[np.float64]
    review_count: IntArray


def _draw_classes(n: int, rng: np.random.Generator, shifted: bool) -> IntArray:
    weights = np.array([pc.weight for pc in _CLASSES], dtype=np.float64)
    if not shifted:
        cls = rng.choice(len(_CLASSES), size=n, p=weights / weights.sum())
        if n >= len(_CLASSES):
            # A full assortment even in small catalogs, so every class has an Exact product.
            cls[rng.permutation(n)[: len(_CLASSES)]] = np.arange(len(_CLASSES))
        return cls
    # Exactly half the catalog becomes one class; the rest keeps the usual mix. Classes
    # may go missing in small catalogs, which is part of the defect: intents are only
    # drawn for classes that have products.
    target = _CLASS_INDEX[_SHIFTED_CLASS]
    weights[target] = 0.0
    cls = rng.choice(len(_CLASSES), size=n, p=weights / weights.sum())
    cls[rng.choice(n, size=n // 2, replace=False)] = target
    return cls


def _draw_attributes(n: int, rng: np.random.Generator, shifted: bool) -> _Attributes:
    """Draw the hidden attributes of ``n`` products (vectorised, one class at a time)."""
    cls = _draw_classes(n, rng, shifted)
    color = np.zeros(n, dtype=np.int64)
    material = np.zeros(n, dtype=np.int64)
    size = np.full(n, -1, dtype=np.int64)
    low = np.zeros(n)
    high = np.zeros(n)
    for index, pc in enumerate(_CLASSES):
        members = np.flatnonzero(cls == index)
        color[members] = rng.choice(_CLASS_COLORS[index], size=members.size)
        material[members] = rng.choice(_CLASS_MATERIALS[index], size=members.size)
        if pc.sizes:
            size[members] = rng.integers(len(pc.sizes), size=members.size)
        low[members], high[members] = pc.price
    brand_weights = 1.0 / np.arange(1, len(_BRANDS) + 1) ** 0.6
    price = low * (high / low) ** rng.random(n)
    rated = rng.random(n) >= 0.22
    rating_count = np.where(rated, np.floor(rng.lognormal(2.3, 1.3, n)).astype(np.int64) + 1, -1)
    average = np.round(np.clip(rng.normal(4.3, 0.55, n), 1.0, 5.0), 1).astype(np.float64)
    review_count = np.where(rated, np.floor(rating_count * rng.beta(2.0, 3.0, n)), -1)
    return _Attributes(
        cls=cls,
        color=color,
        material=material,
        size=size,
        brand=rng.choice(len(_BRANDS), size=n, p=brand_weights / brand_weights.sum()),
        style=rng.integers(len(_STYLES), size=n),
        model=rng.integers(len(_MODELS), size=n),
        price=np.maximum(np.round(price) - 0.01, 4.99),
        rating_count=rating_count,
        average_rating=average,
        review_count=review_count.astype(np.int64),
    )


def _build_catalog(n: int, rng: np.random.Generator, shifted: bool) -> _Catalog:
    return _catalog_of(_draw_attributes(n, rng, shifted))


def _catalog_of(attrs: _Attributes) -> _Catalog:
    """The catalog of products 0..n-1 holding ``attrs``, grouped by class."""
    cls = attrs.cls.astype(np.int16)
    count = np.bincount(cls, minlength=len(_CLASSES)).astype(np.int64)
    return _Catalog(
        cls=cls,
        color=attrs.color.astype(np.int16),
        material=attrs.material.astype(np.int16),
        size=attrs.size.astype(np.int16),
        brand=attrs.brand.astype(np.int16),
        style=attrs.style.astype(np.int16),
        model=attrs.model.astype(np.int16),
        price=attrs.price,
        rating_count=attrs.rating_count.astype(np.int32),
        average_rating=attrs.average_rating,
        review_count=attrs.review_count.astype(np.int32),
        order=np.argsort(cls, kind="stable").astype(np.int64),
        start=np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64),
        count=count,
    )


@dataclass(frozen=True)
class _ChangePlan:
    """Which products the change feed updates or deletes, and which text-is-data rows exist."""

    updated: IntArray
    deleted_ids: IntArray
    deleted: npt.NDArray[np.bool_]
    new_products: int
    text_is_data: dict[int, int]  # product id -> index into _TEXT_IS_DATA


def _plan_changes(
    listed: npt.NDArray[np.bool_], rng: np.random.Generator, text_is_data: bool = True
) -> _ChangePlan:
    """The change feed at the end of a week: about 1% of the ``listed`` products touched
    (updated or deleted) and new products added; with ``text_is_data`` (week 1), which
    rows carry the text-is-data cases."""
    n = listed.size
    ids = np.flatnonzero(listed)
    total = max(6, round(ids.size * 0.01))
    n_deleted = max(1, total * 15 // 100)
    n_new = max(1, total * 15 // 100)
    touched = rng.choice(ids, size=total - n_new, replace=False).astype(np.int64)
    deleted = np.zeros(n, dtype=np.bool_)
    deleted[touched[:n_deleted]] = True
    odd_rows: list[int] = (
        rng.choice(n, size=len(_TEXT_IS_DATA), replace=False).tolist() if text_is_data else []
    )
    return _ChangePlan(
        updated=np.sort(touched[n_deleted:]),
        deleted_ids=np.sort(touched[:n_deleted]),
        deleted=deleted,
        new_products=n_new,
        text_is_data={int(pid): k for k, pid in enumerate(odd_rows)},
    )


# ---------------------------------------------------------------------------------------
# Product rows
# ---------------------------------------------------------------------------------------


class _ProductRow(NamedTuple):
    """One product's hidden attributes as plain Python numbers, for text rendering."""

    product_id: int
    cls: int
    color: int
    material: int
    size: int
    brand: int
    style: int
    model: int
    price: float
    rating_count: int
    average_rating: float
    review_count: int


def _catalog_rows(catalog: _Catalog, begin: int, end: int) -> Iterator[_ProductRow]:
    # One tolist() per column and chunk: indexing numpy arrays element by element is slow.
    columns = zip(
        range(begin, end),
        catalog.cls[begin:end].tolist(),
        catalog.color[begin:end].tolist(),
        catalog.material[begin:end].tolist(),
        catalog.size[begin:end].tolist(),
        catalog.brand[begin:end].tolist(),
        catalog.style[begin:end].tolist(),
        catalog.model[begin:end].tolist(),
        catalog.price[begin:end].tolist(),
        catalog.rating_count[begin:end].tolist(),
        catalog.average_rating[begin:end].tolist(),
        catalog.review_count[begin:end].tolist(),
        strict=True,
    )
    for values in columns:
        yield _ProductRow(*values)


def _article(word: str) -> str:
    vowel_sound = word[:1].lower() in "aeio8" or word.startswith(("11", "18", "L-"))
    return "An" if vowel_sound else "A"


def _product_fields(row: _ProductRow, rnd: random.Random) -> list[str]:
    """The nine WANDS fields of one product, in PRODUCT_COLUMNS order."""
    pc = _CLASSES[row.cls]
    brand = _BRANDS[row.brand]
    color = _COLORS[row.color]
    material = _MATERIALS[row.material]
    size_printed, size_prose = pc.sizes[row.size] if row.size >= 0 else ("", "")
    name_parts = [brand, _MODELS[row.model]]
    if size_printed and rnd.random() < 0.6:
        name_parts.append(size_printed)
    if rnd.random() < 0.7:
        name_parts.append(color)
    if rnd.random() < 0.55:
        name_parts.append(material)
    name_parts.append(rnd.choice(pc.subtypes))

    lead = " ".join(w for w in (size_prose, color.lower(), material.lower()) if w)
    noun = rnd.choice(pc.nouns)
    sentences = [f"{_article(lead)} {lead} {noun} {rnd.choice(pc.phrases)}."]
    if rnd.random() < 0.7:
        sentences.append(f"{_STYLES[row.style]} lines suit any {pc.room}.")
    if rnd.random() < 0.4:
        sentences.append(rnd.choice(_CLOSERS))

    features = [
        f"brand:{brand}",
        f"color:{color}",
        f"material:{material}",
        f"price:{row.price:.2f}",
        f"style:{_STYLES[row.style]}",
    ]
    if size_printed:
        features.append(f"{pc.size_feature}:{size_printed}")
    features.extend(f"{key}:{rnd.choice(values)}" for key, values in pc.extras)

    rated = row.rating_count >= 0
    return [
        str(row.product_id),
        " ".join(name_parts),
        pc.name,
        pc.path,
        " ".join(sentences),
        "|".join(features),
        str(row.rating_count) if rated else "",
        f"{row.average_rating:.1f}" if rated else "",
        str(row.review_count) if rated else "",
    ]


def _clean_fields(row: _ProductRow, rnd: random.Random, plan: _ChangePlan) -> list[str]:
    """A product's product.csv fields before any defect (text-is-data cases included)."""
    fields = _product_fields(row, rnd)
    if row.product_id in plan.text_is_data:
        _apply_text_is_data(fields, plan.text_is_data[row.product_id])
    return fields


def _apply_text_is_data(fields: list[str], case: int) -> None:
    column, template = _TEXT_IS_DATA[case]
    fields[column] = template.replace("{}", fields[column])


class _ProductDefects:
    """Row-level defects of product.csv: which rows, and how each is damaged."""

    def __init__(self, n: int, chosen: tuple[str, ...], streams: _Streams) -> None:
        self.chosen = chosen
        self.masks: dict[str, npt.NDArray[np.bool_]] = {}
        self.rnd: dict[str, random.Random] = {}
        for name in _ROW_DEFECTS:
            if name in chosen:
                # An exact count, not a coin per row: small test catalogs still get the rate.
                size = max(3, round(n * _DEFECT_RATES[name]))
                hit = streams.numpy(name).choice(n, size=size, replace=False)
                self.masks[name] = np.zeros(n, dtype=np.bool_)
                self.masks[name][hit] = True
                self.rnd[name] = streams.python(name)
        self.columns = _product_header(chosen)

    def hits(self, begin: int, end: int) -> dict[int, list[str]]:
        """product id -> names of the row defects it gets, for the rows in [begin, end)."""
        found: dict[int, list[str]] = {}
        for name, mask in self.masks.items():
            for offset in np.flatnonzero(mask[begin:end]).tolist():
                found.setdefault(begin + offset, []).append(name)
        return found

    def damage(self, fields: list[str], names: list[str]) -> None:
        """Apply in-place value defects (not duplication, not schema, not raggedness)."""
        for name in names:
            rnd = self.rnd[name]
            if name == "empty_names":
                fields[1] = ""
            elif name == "bad_numbers":
                fields[rnd.choice((6, 7, 8))] = rnd.choice(_BAD_NUMBERS)
            elif name == "out_of_range":
                column, value = rnd.choice(((7, "7.5"), (7, "-1"), (7, "12.0"), (6, "-3")))
                fields[column] = value
            elif name == "bad_utf8":
                column = rnd.choice((1, 4))
                cut = rnd.randrange(len(fields[column]) + 1)
                marker = rnd.choice(tuple(_BAD_UTF8_MARKERS))
                fields[column] = fields[column][:cut] + marker + fields[column][cut:]

    def duplicate(self, fields: list[str]) -> list[str]:
        """A later 'version' of the same product id with slightly different text."""
        rnd = self.rnd["duplicate_ids"]
        copy = list(fields)
        edit = rnd.randrange(3)
        if edit == 0:
            copy[1] = f"{copy[1]} (New)"
        elif edit == 1:
            copy[4] = f"{copy[4]} Now in a refreshed finish."
        else:
            copy[1] = f"{copy[1]} - Clearance"
        return copy

    def layout(self, fields: list[str], ragged: bool) -> str:
        """Apply the schema defects to one row, then raggedness, and join it."""
        out = list(fields)
        if "schema_missing" in self.chosen:
            del out[2]
        if "schema_extra" in self.chosen:
            out.append("check supplier feed" if fields[0].endswith("7") else "")
        if ragged:
            rnd = self.rnd["ragged_rows"]
            out = out[: rnd.randrange(2, len(out) - 1)] if rnd.random() < 0.5 else [*out, "x"]
        return "\t".join(out)


def _product_header(chosen: tuple[str, ...]) -> list[str]:
    columns = list(PRODUCT_COLUMNS)
    if "schema_renamed" in chosen:
        columns[columns.index("product_name")] = "product_title"
    if "schema_missing" in chosen:
        columns.remove("product_class")
    if "schema_extra" in chosen:
        columns.append("internal_notes")
    return columns


def _encode(lines: list[str]) -> bytes:
    data = ("\n".join(lines) + "\n").encode()
    if b"\x00" in data:
        for marker, raw in _BAD_UTF8_MARKERS.items():
            data = data.replace(marker.encode(), raw)
    return data


def _write_products(
    path: Path,
    catalog: _Catalog,
    plan: _ChangePlan,
    chosen: tuple[str, ...],
    streams: _Streams,
    report: ProgressCallback,
) -> tuple[int, dict[int, list[str]]]:
    """Stream product.csv; return its data-row count and the clean rows the feed updates."""
    n = catalog.size_of_catalog
    rnd = streams.python("text")
    defects = _ProductDefects(n, chosen, streams)
    wanted = set(plan.updated.tolist())
    captured: dict[int, list[str]] = {}
    written = 0
    with _atomic_writer(path) as handle:
        handle.write(_header(defects.columns))
        for begin in range(0, n, _CHUNK_ROWS):
            end = min(n, begin + _CHUNK_ROWS)
            hits = defects.hits(begin, end)
            lines: list[str] = []
            later: list[str] = []
            for row in _catalog_rows(catalog, begin, end):
                fields = _clean_fields(row, rnd, plan)
                if row.product_id in wanted:
                    captured[row.product_id] = list(fields)
                names = hits.get(row.product_id, [])
                if names:
                    defects.damage(fields, names)
                    if "duplicate_ids" in names:
                        later.append(defects.layout(defects.duplicate(fields), False))
                lines.append(defects.layout(fields, "ragged_rows" in names))
            # Duplicates land at the end of their chunk: a later "version" of the row.
            lines.extend(later)
            handle.write(_encode(lines))
            written += len(lines)
            report("product", end, n)
    return written, captured


# ---------------------------------------------------------------------------------------
# Queries: hidden intents rendered in the store's vocabulary
# ---------------------------------------------------------------------------------------


class _Intent(NamedTuple):
    """What a shopper wants: a class and optional constraints (-1 = no constraint)."""

    cls: int
    color: int
    material: int
    size: int
    brand: int


@dataclass(frozen=True)
class _Queries:
    """Training queries (search logs) followed by golden queries (query.csv)."""

    texts: list[str]
    intents: list[_Intent]
    columns: dict[str, IntArray]  # the intents as one array per _Intent field
    n_train: int
    popularity: npt.NDArray[np.float64]  # search probability of each training query
    exact_pool: IntArray  # (queries, _EXACT_POOL) sample of Exact product ids
    exact_count: IntArray

    @property
    def golden(self) -> range:
        return range(self.n_train, len(self.texts))


def _misspell(token: str, rnd: random.Random) -> str:
    if token in _MISSPELLINGS and rnd.random() < 0.6:
        return _MISSPELLINGS[token]
    i = rnd.randrange(1, len(token) - 1)
    edit = rnd.randrange(3)
    if edit == 0:
        return token[:i] + token[i + 1] + token[i] + token[i + 2 :]
    if edit == 1:
        return token[:i] + token[i + 1 :]
    return token[:i] + token[i] + token[i:]


def _render_query(intent: _Intent, rnd: random.Random) -> tuple[str, int]:
    """Turn a hidden intent into text the way shoppers type it; also count the typos."""
    pc = _CLASSES[intent.cls]
    use_house_term = rnd.random() < _P_HOUSE_TERM
    noun = rnd.choice(pc.house_terms if use_house_term else pc.nouns)
    attributes = []
    if intent.size >= 0:
        attributes.append(pc.sizes[intent.size][1].lower().replace("-", " "))
    if intent.color >= 0:
        attributes.append(_COLORS[intent.color].lower())
    if intent.material >= 0:
        attributes.append(_MATERIALS[intent.material].lower())
    if rnd.random() < _P_ABBREVIATE:
        attributes = [_ABBREVIATIONS.get(word, word) for word in attributes]
    words = [noun, *attributes] if rnd.random() < _P_NOUN_FIRST else [*attributes, noun]
    if intent.brand >= 0:
        words.insert(0, _BRANDS[intent.brand].lower())
    tokens = " ".join(words).split()
    typos = 0
    for i, token in enumerate(tokens):
        if len(token) >= 4 and token.isalpha() and rnd.random() < _P_TYPO:
            tokens[i] = _misspell(token, rnd)
            typos += 1
    return " ".join(tokens), typos


class _IntentSampler:
    """Intents anchored on real, not deleted products, so each has at least one Exact."""

    def __init__(self, catalog: _Catalog, deleted: npt.NDArray[np.bool_]) -> None:
        self.catalog = catalog
        self.alive = [m[~deleted[m]] for m in (catalog.members(c) for c in range(len(_CLASSES)))]
        # Demand follows the store's usual mix, whatever the catalog currently holds.
        demand = np.array([pc.weight for pc in _CLASSES]) * [m.size > 0 for m in self.alive]
        self.classes = list(range(len(_CLASSES)))
        self.cumulative = np.cumsum(demand / demand.sum()).tolist()

    def sample(self, rnd: random.Random) -> _Intent:
        cls = rnd.choices(self.classes, cum_weights=self.cumulative)[0]
        members = self.alive[cls]
        anchor = int(members[rnd.randrange(members.size)])
        cat = self.catalog
        picks = {key: rnd.random() < p for key, p in _CONSTRAINT_PROBABILITIES.items()}
        return _Intent(
            cls=cls,
            color=int(cat.color[anchor]) if picks["color"] else -1,
            material=int(cat.material[anchor]) if picks["material"] else -1,
            size=int(cat.size[anchor]) if picks["size"] else -1,
            brand=int(cat.brand[anchor]) if picks["brand"] else -1,
        )


def _query_counts(products: int, n_searches: int) -> tuple[int, int]:
    """(distinct training query texts, golden queries)."""
    n_train = min(max(200, n_searches // 8), 25_000)
    n_golden = min(200, max(20, products // 10))
    return n_train, n_golden


def _sample_queries(
    sampler: _IntentSampler,
    wanted: int,
    rnd: random.Random,
    taken_texts: set[str],
    taken_intents: set[_Intent] | None,
) -> tuple[list[str], list[_Intent], list[int]]:
    """Draw distinct texts; with ``taken_intents``, also distinct and unseen intents.

    Returns the texts, their intents and how many typos each text has.
    """
    texts: list[str] = []
    intents: list[_Intent] = []
    typo_counts: list[int] = []
    attempts = 0
    while len(texts) < wanted:
        attempts += 1
        if attempts > 200 * wanted + 10_000:
            raise RuntimeError(f"could not draw {wanted} distinct queries from the catalog")
        intent = sampler.sample(rnd)
        if taken_intents is not None:
            if intent in taken_intents:
                continue
            taken_intents.add(intent)
        text, typos = _render_query(intent, rnd)
        if text in taken_texts:
            continue
        taken_texts.add(text)
        texts.append(text)
        intents.append(intent)
        typo_counts.append(typos)
    return texts, intents, typo_counts


def _exact_mask(catalog: _Catalog, ids: IntArray, intent: _Intent) -> npt.NDArray[np.bool_]:
    mask = np.ones(ids.shape, dtype=np.bool_)
    for attr, wanted in (
        (catalog.color, intent.color),
        (catalog.material, intent.material),
        (catalog.size, intent.size),
        (catalog.brand, intent.brand),
    ):
        if wanted >= 0:
            mask &= attr[ids] == wanted
    return mask


def _build_queries(
    catalog: _Catalog, deleted: npt.NDArray[np.bool_], n_searches: int, streams: _Streams
) -> _Queries:
    n_train, n_golden = _query_counts(catalog.size_of_catalog, n_searches)
    sampler = _IntentSampler(catalog, deleted)
    taken: set[str] = set()
    texts, intents, typos = _sample_queries(
        sampler, n_train, streams.python("queries"), taken, None
    )
    # Golden intents differ from every training intent, so evaluation measures generalisation.
    golden_texts, golden_intents, _ = _sample_queries(
        sampler, n_golden, streams.python("golden"), taken, set(intents)
    )

    rng = streams.numpy("popularity")
    # Short, correctly spelled queries are the popular head; long specific ones and
    # misspellings the tail (Zipf-like).
    constraints = np.array([sum(v >= 0 for v in intent[1:]) for intent in intents], dtype=float)
    key = constraints + np.array(typos, dtype=float) + 1.5 * rng.random(n_train)
    rank = np.argsort(np.argsort(key, kind="stable"), kind="stable")
    popularity = 1.0 / (rank + 1.0) ** _ZIPF_EXPONENT

    all_intents = intents + golden_intents
    pool, count = _exact_pools(catalog, all_intents, rng)
    return _Queries(
        texts=texts + golden_texts,
        intents=all_intents,
        columns=_intent_arrays(all_intents),
        n_train=n_train,
        popularity=popularity / popularity.sum(),
        exact_pool=pool,
        exact_count=count,
    )


def _exact_pools(
    catalog: _Catalog, intents: Sequence[_Intent], rng: np.random.Generator
) -> tuple[IntArray, IntArray]:
    """Up to ``_EXACT_POOL`` Exact products of each intent, and how many there are."""
    pool = np.zeros((len(intents), _EXACT_POOL), dtype=np.int64)
    count = np.zeros(len(intents), dtype=np.int64)
    for q, intent in enumerate(intents):
        members = catalog.members(intent.cls)
        exact = members[_exact_mask(catalog, members, intent)]
        if exact.size > _EXACT_POOL:
            exact = rng.choice(exact, size=_EXACT_POOL, replace=False)
        pool[q, : exact.size] = exact
        count[q] = exact.size
    return pool, count


def _write_queries(path: Path, queries: _Queries) -> int:
    lines = [
        f"{query_id}\t{queries.texts[q]}\t{_CLASSES[queries.intents[q].cls].name}"
        for query_id, q in enumerate(queries.golden)
    ]
    with _atomic_writer(path) as handle:
        handle.write(_header(QUERY_COLUMNS))
        handle.write(_encode(lines))
    return len(lines)


# ---------------------------------------------------------------------------------------
# Ground truth and judgements
# ---------------------------------------------------------------------------------------


def _grades(
    catalog: _Catalog,
    ids: IntArray,
    intents: dict[str, IntArray],
) -> npt.NDArray[np.int64]:
    """2 Exact / 1 Partial / 0 Irrelevant for products ``ids`` against broadcast intents."""
    same_class = catalog.cls[ids] == intents["cls"]
    exact = same_class.copy()
    for field, attr in (
        ("color", catalog.color),
        ("material", catalog.material),
        ("size", catalog.size),
        ("brand", catalog.brand),
    ):
        wanted = intents[field]
        exact &= (wanted < 0) | (attr[ids] == wanted)
    sibling = _PARENT_OF_CLASS[catalog.cls[ids]] == _PARENT_OF_CLASS[intents["cls"]]
    return np.where(exact, 2, np.where(same_class | sibling, 1, 0)).astype(np.int64)


def _intent_arrays(intents: Sequence[_Intent]) -> dict[str, IntArray]:
    return {
        field: np.array([getattr(i, field) for i in intents], dtype=np.int64)
        for field in _Intent._fields
    }


def _judge(
    catalog: _Catalog,
    deleted: npt.NDArray[np.bool_],
    intent: _Intent,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """15-30 shuffled (product id, grade) judgements of products that are not deleted."""
    members = catalog.members(intent.cls)
    members = members[~deleted[members]]
    is_exact = _exact_mask(catalog, members, intent)
    exact = members[is_exact]
    near = np.concatenate(
        [members[~is_exact], *(catalog.members(s) for s in _SIBLINGS[intent.cls])]
    )
    near = near[~deleted[near]]
    # WANDS-like mix: Partials dominate, then Exacts; a few Irrelevants keep nDCG honest.
    target = int(rng.integers(15, 31))
    n_irrelevant = int(rng.integers(3, 8))
    n_exact = min(exact.size, int(rng.integers(5, 15)))
    n_partial = min(near.size, max(4, target - n_exact - n_irrelevant))
    n_irrelevant = max(n_irrelevant, target - n_exact - n_partial)
    chosen_exact = rng.choice(exact, size=n_exact, replace=False)
    chosen_near = rng.choice(near, size=n_partial, replace=False)
    n = catalog.size_of_catalog
    candidates = rng.choice(n, size=min(n, 8 * n_irrelevant + 40), replace=False)
    candidates = candidates[~deleted[candidates]]
    wanted = {k: v[0] for k, v in _intent_arrays([intent]).items()}
    far = candidates[_grades(catalog, candidates, wanted) == 0]
    judged = [(int(p), 2) for p in chosen_exact] + [(int(p), 1) for p in chosen_near]
    judged += [(int(p), 0) for p in far[:n_irrelevant]]
    order = rng.permutation(len(judged))
    return [judged[i] for i in order]


def _judgements(
    catalog: _Catalog, plan: _ChangePlan, queries: _Queries, streams: _Streams
) -> list[tuple[int, int, str]]:
    """label.csv's (query id, product id, label) rows of week 1, in file order."""
    rng = streams.numpy("labels")
    return [
        (query_id, product_id, _LABEL_NAMES[grade])
        for query_id, q in enumerate(queries.golden)
        for product_id, grade in _judge(catalog, plan.deleted, queries.intents[q], rng)
    ]


def _write_labels(
    path: Path,
    catalog: _Catalog,
    plan: _ChangePlan,
    queries: _Queries,
    chosen: tuple[str, ...],
    streams: _Streams,
) -> int:
    rows = _judgements(catalog, plan, queries, streams)
    if "orphan_judgements" in chosen:
        rows = _add_orphans(rows, catalog.size_of_catalog + plan.new_products, streams)
    lines = [f"{i}\t{query_id}\t{pid}\t{label}" for i, (query_id, pid, label) in enumerate(rows)]
    with _atomic_writer(path) as handle:
        handle.write(_header(LABEL_COLUMNS))
        handle.write(_encode(lines))
    return len(lines)


def _add_orphans(
    rows: list[tuple[int, int, str]], first_free_id: int, streams: _Streams
) -> list[tuple[int, int, str]]:
    rng = streams.numpy("orphan_judgements")
    n_orphans = max(3, round(len(rows) * _DEFECT_RATES["orphan_judgements"]))
    out = list(rows)
    # Far above every real and newly added product id, so they can never resolve.
    ghost_ids = first_free_id + 1_000_000 + rng.choice(9_000_000, size=n_orphans, replace=False)
    positions = np.sort(rng.integers(0, len(rows) + 1, size=n_orphans))[::-1]
    for position, ghost in zip(positions.tolist(), ghost_ids.tolist(), strict=True):
        query_id = out[min(position, len(out) - 1)][0]
        out.insert(position, (query_id, ghost, _LABEL_NAMES[int(rng.integers(3))]))
    return out


# ---------------------------------------------------------------------------------------
# Search logs: sessions, a noisy ranker and a position-based click model
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SearchPlan:
    """Per-search columns, already in search_id (time) order."""

    query: IntArray
    user: IntArray
    session: IntArray
    at: npt.NDArray[np.int64]  # seconds since the start of the window


def _plan_searches(
    queries: _Queries, n_searches: int, chosen: tuple[str, ...], streams: _Streams
) -> tuple[_SearchPlan, int]:
    rng = streams.numpy("searches")
    n_users = _shoppers(n_searches)
    sizes = rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1], size=n_searches)
    session = np.repeat(np.arange(n_searches), sizes)[:n_searches]
    n_sessions = int(session[-1]) + 1
    first = np.searchsorted(session, np.arange(n_sessions))
    starts = rng.integers(0, int(_SEARCH_WINDOW.total_seconds()) - 3_600, size=n_sessions)
    gaps = rng.integers(15, 240, size=n_searches)
    gaps[first] = 0
    elapsed = np.cumsum(gaps)
    at = starts[session] + elapsed - elapsed[first[session]]
    user = rng.integers(n_users, size=n_sessions)[session]
    query = rng.choice(queries.n_train, size=n_searches, p=queries.popularity)
    if "golden_leak" in chosen:
        leak_rng = streams.numpy("golden_leak")
        n_leaked = max(6, round(n_searches * _DEFECT_RATES["golden_leak"]))
        leaked = leak_rng.choice(n_searches, size=n_leaked, replace=False)
        # A few golden queries, each searched by many users: spread thinly, the leak would
        # be dropped by the k-anonymity filter before the training-data gate could see it.
        n_golden = len(queries.golden)
        n_sources = max(1, min(10, n_golden // 10, n_leaked // 12))
        sources = leak_rng.choice(n_golden, size=n_sources, replace=False)
        query[leaked] = queries.n_train + sources[np.arange(n_leaked) % n_sources]
    order = np.lexsort((np.arange(n_searches), at))
    plan = _SearchPlan(query=query[order], user=user[order], session=session[order], at=at[order])
    return plan, n_users


def _shoppers(n_searches: int) -> int:
    """How many shoppers (user ids) make ``n_searches`` searches."""
    return max(50, n_searches // 6)


def _user_columns(n_users: int, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    first = rng.integers(len(_FIRST_NAMES), size=n_users).tolist()
    last = rng.integers(len(_LAST_NAMES), size=n_users).tolist()
    width = max(6, len(str(n_users)))
    ids = [f"u{u:0{width}d}" for u in range(n_users)]
    emails = [
        f"{_FIRST_NAMES[f]}.{_LAST_NAMES[g]}{u}@example.com"
        for u, (f, g) in enumerate(zip(first, last, strict=True))
    ]
    return ids, emails


def _candidates(
    catalog: _Catalog, queries: _Queries, q: IntArray, rng: np.random.Generator
) -> IntArray:
    """Ten distinct products per search from the noisy ranker's candidate sources."""
    shape = (q.size, _IMPRESSIONS_PER_SEARCH)
    n = catalog.size_of_catalog
    source = rng.choice(len(_CANDIDATE_SOURCES), size=shape, p=_CANDIDATE_SOURCES)
    u = rng.random(shape)
    qq = np.broadcast_to(q[:, None], shape)
    exact_count = queries.exact_count[qq]
    exact = queries.exact_pool[qq, np.minimum((u * exact_count).astype(np.int64), _EXACT_POOL - 1)]
    cls = queries.columns["cls"][qq]
    same = catalog.order[_member_slot(catalog, cls, u)]
    sib_cls = _SIBLING_TABLE[cls, (u * _SIBLING_COUNT[cls]).astype(np.int64)]
    has_sibling = (_SIBLING_COUNT[cls] > 0) & (catalog.count[sib_cls] > 0)
    sibling = catalog.order[_member_slot(catalog, sib_cls, rng.random(shape))]
    anywhere = rng.integers(n, size=shape)
    picked = np.select(
        [(source == 0) & (exact_count > 0), source == 1, (source == 2) & has_sibling],
        [exact, same, sibling],
        anywhere,
    ).astype(np.int64)
    return _deduplicate(picked, n, rng)


def _member_slot(catalog: _Catalog, cls: IntArray, u: npt.NDArray[np.float64]) -> IntArray:
    """Index into ``catalog.order`` of a uniform member of each class in ``cls``."""
    slot = catalog.start[cls] + (u * catalog.count[cls]).astype(np.int64)
    # An empty class (possible under category_shift) has no slot; its pick is discarded by
    # the caller, but the index must still be valid.
    return np.minimum(slot, catalog.size_of_catalog - 1)


def _deduplicate(picked: IntArray, n: int, rng: np.random.Generator) -> IntArray:
    """Replace repeated products within a search by random ones until all ten differ."""
    while True:
        order = np.argsort(picked, axis=1, kind="stable")
        ranked = np.take_along_axis(picked, order, axis=1)
        repeated = np.zeros(picked.shape, dtype=np.bool_)
        repeated[:, 1:] = ranked[:, 1:] == ranked[:, :-1]
        if not repeated.any():
            return picked
        rows, cols = np.nonzero(repeated)
        picked[rows, order[rows, cols]] = rng.integers(n, size=rows.size)


def _simulate(
    catalog: _Catalog, queries: _Queries, q: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """Ranked products and clicked / added_to_cart / purchased flags, one row per search."""
    products = _candidates(catalog, queries, q, rng)
    intents = {k: v[q][:, None] for k, v in queries.columns.items()}
    grade = _grades(catalog, products, intents)
    score = grade + rng.normal(0.0, _RANKER_NOISE, size=grade.shape)
    order = np.argsort(-score, axis=1, kind="stable")
    products = np.take_along_axis(products, order, axis=1)
    grade = np.take_along_axis(grade, order, axis=1)
    clicked, carted, purchased = click_outcomes(grade, rng)
    return products, clicked, carted, purchased


def examination(positions: int) -> npt.NDArray[np.float64]:
    """The click model's chance that a shopper looks at positions 1..``positions``."""
    return np.asarray(1.0 / np.arange(1, positions + 1) ** _EXAMINATION_POWER, dtype=np.float64)


def click_outcomes(
    grade: IntArray, rng: np.random.Generator
) -> tuple[IntArray, IntArray, IntArray]:
    """The position-based click model: clicked / added-to-cart / purchased flags for
    ranked results of hidden ``grade`` (0 Irrelevant, 1 Partial, 2 Exact), one row per
    search, column = position - 1. A shopper examines position p with probability
    ``p ** -0.8`` and clicks an examined result by its grade's attractiveness."""
    seen = examination(grade.shape[1])
    clicked = rng.random(grade.shape) < seen * _ATTRACTIVENESS[grade]
    carted = clicked & (rng.random(grade.shape) < _P_CART_GIVEN_CLICK[grade])
    purchased = carted & (rng.random(grade.shape) < _P_PURCHASE_GIVEN_CART[grade])
    return clicked.astype(np.int64), carted.astype(np.int64), purchased.astype(np.int64)


@dataclass(frozen=True)
class StoreTruth:
    """The hidden ground truth of the store ``generate`` draws with the same arguments:
    what each query means and how relevant each product is to it."""

    catalog: _Catalog
    queries: _Queries
    deleted: npt.NDArray[np.bool_]

    @property
    def training_queries(self) -> int:
        """How many queries shoppers search (the golden ones are not searched)."""
        return self.queries.n_train

    def sample_queries(self, rng: np.random.Generator, n: int) -> IntArray:
        """``n`` query indices drawn by popularity, as the generator's shoppers draw them."""
        return rng.choice(self.queries.n_train, size=n, p=self.queries.popularity)

    def text(self, query: int) -> str:
        """What shoppers type for query ``query``."""
        return self.queries.texts[query]

    def grades(self, query: int, product_ids: Sequence[int]) -> IntArray:
        """2 Exact / 1 Partial / 0 Irrelevant of each product for the query; a product the
        hidden catalog does not hold (added by the change feed) counts as Irrelevant."""
        ids = np.asarray(product_ids, dtype=np.int64)
        known = (ids >= 0) & (ids < self.catalog.size_of_catalog)
        wanted = {k: v[query] for k, v in self.queries.columns.items()}
        out = np.zeros(ids.shape, dtype=np.int64)
        if known.any():
            out[known] = _grades(self.catalog, ids[known], wanted)
        return out

    def judgements(self, query: int) -> dict[int, int]:
        """Every listed (not deleted) product with a gain for the query -> its grade: the
        complete judgements the served rankings are scored against."""
        listed = np.flatnonzero(~self.deleted)
        grades = self.grades(query, listed.tolist())
        relevant = grades > 0
        return dict(zip(listed[relevant].tolist(), grades[relevant].tolist(), strict=True))


def store_truth(
    products: int = 2000, seed: int = 42, searches: int | None = None, week: int = 1
) -> StoreTruth:
    """The ground truth behind ``generate(out, products, seed, searches=searches,
    week=week)``."""
    from shelfguard import store_weeks

    _validate(products, seed, (), searches)
    store_weeks.validate_week(week, ())
    n_searches = default_searches(products) if searches is None else searches
    if week > 1:
        return store_weeks.truth_of_week(products, seed, n_searches, week)
    _, catalog, plan, queries = _draw_store(products, seed, n_searches, False)
    return StoreTruth(catalog=catalog, queries=queries, deleted=plan.deleted)


def _write_search_log(
    path: Path,
    catalog: _Catalog,
    queries: _Queries,
    n_searches: int,
    window_start: datetime,
    chosen: tuple[str, ...],
    streams: _Streams,
    report: ProgressCallback,
    later_week: _LaterWeek | None = None,
) -> int:
    """Stream search_log.csv. ``later_week`` places a later week's searches after the
    earlier weeks' (ids, sessions, the same shoppers) on a catalog of its listed products."""
    plan, n_users = _plan_searches(queries, n_searches, chosen, streams)
    if later_week is None:
        user_ids, emails = _user_columns(n_users, streams.numpy("users"))
        first_search = first_session = 0
    else:
        user_ids, emails = later_week.users
        first_search, first_session = later_week.first_search, later_week.first_session
    rng = streams.numpy("clicks")
    ragged = "ragged_rows" in chosen
    ragged_rng = streams.numpy("ragged_search_log")
    base = np.datetime64(window_start.replace(tzinfo=None), "s")
    total = n_searches * _IMPRESSIONS_PER_SEARCH
    written = 0
    with _atomic_writer(path) as handle:
        handle.write(_header(SEARCH_LOG_COLUMNS))
        for begin in range(0, n_searches, _SEARCH_CHUNK):
            end = min(n_searches, begin + _SEARCH_CHUNK)
            q = plan.query[begin:end]
            products, clicked, carted, purchased = _simulate(catalog, queries, q, rng)
            if later_week is not None:
                products = later_week.product_ids[products]
            stamps = np.datetime_as_string(base + plan.at[begin:end], unit="s").tolist()
            prefixes = [
                f"{first_search + begin + k + 1}\ts{first_session + session:07d}\t{user_ids[user]}\t{emails[user]}\t{stamp}Z\t"
                f"{queries.texts[query]}\t"
                for k, (session, user, stamp, query) in enumerate(
                    zip(
                        plan.session[begin:end].tolist(),
                        plan.user[begin:end].tolist(),
                        stamps,
                        q.tolist(),
                        strict=True,
                    )
                )
            ]
            lines = _impression_lines(prefixes, products, clicked, carted, purchased)
            if ragged:
                _make_ragged(lines, ragged_rng)
            handle.write(_encode(lines))
            written += len(lines)
            report("search_log", end * _IMPRESSIONS_PER_SEARCH, total)
    return written


@dataclass(frozen=True)
class _LaterWeek:
    """Where a later week's search log continues the earlier weeks'."""

    first_search: int  # searches (and sessions) of the earlier weeks
    first_session: int
    users: tuple[list[str], list[str]]  # the store's shoppers: ids and e-mails
    product_ids: IntArray  # the week's catalog index -> product id


def _impression_lines(
    prefixes: list[str],
    products: IntArray,
    clicked: IntArray,
    carted: IntArray,
    purchased: IntArray,
) -> list[str]:
    lines: list[str] = []
    for prefix, pids, clicks, carts, buys in zip(
        prefixes,
        products.tolist(),
        clicked.tolist(),
        carted.tolist(),
        purchased.tolist(),
        strict=True,
    ):
        for position, (pid, c, a, b) in enumerate(zip(pids, clicks, carts, buys, strict=True)):
            lines.append(f"{prefix}{pid}\t{position + 1}\t{c}\t{a}\t{b}")
    return lines


def _make_ragged(lines: list[str], rng: np.random.Generator) -> None:
    hit = np.flatnonzero(rng.random(len(lines)) < _DEFECT_RATES["ragged_rows"]).tolist()
    for index in hit:
        if rng.random() < 0.5:
            lines[index] = lines[index].rsplit("\t", 2)[0]
        else:
            lines[index] = lines[index] + "\t1"


# ---------------------------------------------------------------------------------------
# Catalog change feed
# ---------------------------------------------------------------------------------------


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
