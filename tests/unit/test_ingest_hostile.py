"""Hostile files: a line never refuses a file, the file-level contract still does.

Each corruption DuckDB's strict parser cannot take (or would take silently) is written
into an otherwise clean ``product.csv`` and ingested into a real DuckDB warehouse with a
real SQLite ledger. The checks are the same everywhere (:func:`check_load`): the batch is
accepted, rows read = accepted + quarantined, each bad line is in quarantine with its
reason and its exact original bytes, and every other line is in ``raw.products`` under
its own ``_line_number`` with the values of its fields.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ingest_support import product_line

from shelfguard.config import Settings
from shelfguard.data.generator import MIN_PRODUCTS, MIN_SEARCHES, PRODUCT_COLUMNS, generate
from shelfguard.data.ingest import MAX_LINE_BYTES, SPECS, FileManifest, IngestError, ingest
from shelfguard.ledger import Ledger, open_ledger

HEADER = "\t".join(PRODUCT_COLUMNS).encode()
TYPES = next(spec for spec in SPECS if spec.key == "product").columns


def clean_file(count: int = 5) -> list[bytes]:
    """A header and ``count`` good lines (product ids 1..count), without terminators."""
    return [HEADER] + [product_line(pid) for pid in range(1, count + 1)]


@pytest.fixture
def ledger(sg_home: Settings) -> Iterator[Ledger]:
    led = open_ledger(sg_home.ledger_url)
    yield led
    led.dispose()


def body_of(line: bytes) -> bytes:
    """A line split from the file on LF, without its CR terminator (if it has one)."""
    return line[:-1] if line.endswith(b"\r") else line


def expected_row(body: bytes) -> tuple[object, ...]:
    """The raw.products values a good line's fields load as (an empty field is NULL)."""
    values: list[object] = []
    for raw, sql_type in zip(body.split(b"\t"), TYPES.values(), strict=True):
        text = raw.decode("utf-8")
        if not text:
            values.append(None)
        elif sql_type == "BIGINT":
            values.append(int(text))
        elif sql_type == "DOUBLE":
            values.append(float(text))
        else:
            values.append(text)
    return tuple(values)


Rows = list[tuple[Any, ...]]


def stored_rows(warehouse: Path | str, sha256: str) -> tuple[Rows, Rows]:
    """(line, reason, original bytes) quarantined and (line, *values) accepted from a file."""
    cols = ", ".join(f'"{name}"' for name in TYPES)
    queries = (
        "SELECT line_number, reason, original_line FROM quarantine.products "
        "WHERE file_sha256 = $sha ORDER BY 1",
        f"SELECT _line_number, {cols} FROM raw.products "
        "WHERE _file_sha256 = $sha ORDER BY _line_number",
    )
    if isinstance(warehouse, Path):
        with duckdb.connect(str(warehouse), read_only=True) as con:
            quarantined, accepted = (con.execute(q, {"sha": sha256}).fetchall() for q in queries)
        return quarantined, accepted
    engine = sa.create_engine(warehouse)
    try:
        with engine.connect() as conn:
            quarantined, accepted = (
                [
                    tuple(row)
                    for row in conn.execute(sa.text(q.replace("$sha", ":sha")), {"sha": sha256})
                ]
                for q in queries
            )
    finally:
        engine.dispose()
    return quarantined, accepted


def check_load(
    warehouse: Path | str, entry: FileManifest, content: bytes, bad: dict[int, str]
) -> None:
    """The load of ``content`` matches it line for line; ``bad``: line number -> reason."""
    lines = content.split(b"\n")
    if content.endswith(b"\n"):
        lines.pop()
    data_lines = len(lines) - 1
    assert entry.rows_read == data_lines
    assert entry.rows_read == entry.rows_accepted + entry.rows_quarantined
    assert entry.rows_quarantined == len(bad)
    by_reason: dict[str, int] = {}
    for reason in bad.values():
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert entry.quarantine_by_reason == by_reason
    quarantined, accepted = stored_rows(warehouse, entry.sha256)
    assert [(line, reason) for line, reason, _ in quarantined] == sorted(bad.items())
    for line, _, original in quarantined:
        assert bytes(original) == body_of(lines[line - 1]), f"line {line} not kept byte for byte"
    good = [n for n in range(2, data_lines + 2) if n not in bad]
    assert [row[0] for row in accepted] == good
    for line, *values in accepted:
        assert tuple(values) == expected_row(body_of(lines[line - 1])), f"line {line}"


def ingest_product_file(
    folder: Path, duckdb_path: Path, ledger: Ledger, content: bytes
) -> FileManifest:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "product.csv").write_bytes(content)
    manifest = ingest(folder, duckdb_path, ledger)
    (entry,) = manifest.files
    return entry


def load(tmp_path: Path, sg_home: Settings, ledger: Ledger, content: bytes) -> FileManifest:
    return ingest_product_file(tmp_path / "src", sg_home.duckdb_path, ledger, content)


# --- one test per corruption kind ----------------------------------------------------


def test_mixed_crlf_and_lf_line_endings_load_every_line(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    lines = clean_file(6)
    terminators = [b"\r\n", b"\n", b"\r\n", b"\r\n", b"\n", b"\n", b"\r\n"]
    content = b"".join(line + end for line, end in zip(lines, terminators, strict=True))
    # A line that is only a CRLF is blank; a CR at the very end of the file ends its line.
    content += b"\r\n" + product_line(7) + b"\r"
    entry = load(tmp_path, sg_home, ledger, content)
    check_load(sg_home.duckdb_path, entry, content, {8: "blank_line"})


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["lf", "crlf"])
def test_a_carriage_return_inside_a_line_is_quarantined(
    tmp_path: Path, sg_home: Settings, ledger: Ledger, newline: bytes
) -> None:
    lines = clean_file(4)
    lines[2] = product_line(2, name="oak\rtable")
    lines[4] = product_line(4) + b"\r"  # "\r\r\n" or "\r\n": a CR before the terminator
    content = newline.join(lines) + newline
    entry = load(tmp_path, sg_home, ledger, content)
    bad = {3: "stray_carriage_return"}
    if newline == b"\r\n":
        bad[5] = "stray_carriage_return"
    check_load(sg_home.duckdb_path, entry, content, bad)


def test_a_nul_byte_is_quarantined_on_duckdb_too(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    lines = clean_file(4)
    lines[3] = product_line(3, name="oak\x00table")
    content = b"\n".join(lines) + b"\n"
    entry = load(tmp_path, sg_home, ledger, content)
    check_load(sg_home.duckdb_path, entry, content, {4: "nul_character"})
    with duckdb.connect(str(sg_home.duckdb_path), read_only=True) as con:
        (detail,) = con.execute("SELECT detail FROM quarantine.products").fetchone() or ("",)
    assert "product_name" in detail


@pytest.mark.parametrize("byte", [0x01, 0x07, 0x0B, 0x0C, 0x1B, 0x1F])
def test_a_control_character_is_quarantined(
    tmp_path: Path, sg_home: Settings, ledger: Ledger, byte: int
) -> None:
    lines = clean_file(3)
    lines[2] = product_line(2, name=f"oak{chr(byte)}table")
    content = b"\n".join(lines) + b"\n"
    entry = load(tmp_path, sg_home, ledger, content)
    check_load(sg_home.duckdb_path, entry, content, {3: "control_character"})


def test_a_lone_quote_is_data_in_text_and_unparseable_in_a_number(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    # The files have no quoting: a quote is a character like any other.
    lines = clean_file(5)
    lines[1] = product_line(1, name='"oak table')
    lines[2] = product_line(2, name='oak table"')
    lines[3] = product_line(3, rating='4.5"')
    lines[4] = b'"'
    lines[5] = b'"' + product_line(5)
    content = b"\n".join(lines) + b"\n"
    entry = load(tmp_path, sg_home, ledger, content)
    bad = {4: "unparseable_value", 5: "too_few_fields", 6: "unparseable_value"}
    check_load(sg_home.duckdb_path, entry, content, bad)


def test_a_multi_megabyte_line_is_quarantined_as_line_too_long(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    lines = clean_file(5)
    lines[2] = product_line(2, name="x" * (50 * 1024 * 1024))
    # At the limit a line loads; one byte over, it does not.
    at_limit = product_line(4, name="y")
    lines[4] = product_line(4, name="y" * (MAX_LINE_BYTES - len(at_limit) + 1))
    lines[5] = product_line(5, name="z" * (MAX_LINE_BYTES - len(at_limit) + 2))
    assert (len(lines[4]), len(lines[5])) == (MAX_LINE_BYTES, MAX_LINE_BYTES + 1)
    content = b"\r\n".join(lines) + b"\r\n"  # the CR of CRLF does not count
    entry = load(tmp_path, sg_home, ledger, content)
    check_load(sg_home.duckdb_path, entry, content, {3: "line_too_long", 6: "line_too_long"})


@pytest.mark.parametrize("with_hazard", [False, True], ids=["fast-path", "slow-path"])
def test_invalid_utf8_is_quarantined(
    tmp_path: Path, sg_home: Settings, ledger: Ledger, with_hazard: bool
) -> None:
    lines = clean_file(7)
    lines[1] = product_line(1).replace(b"oak", b"caf\xff")
    lines[2] = product_line(2).replace(b"oak", b"\xed\xa0\x80")  # an encoded surrogate
    lines[3] = product_line(3).replace(b"oak", b"\xc0\xaf")  # overlong "/"
    lines[4] = product_line(4) + b"\xe2\x82"  # truncated, in the last (numeric) field
    lines[5] = product_line(5, name="café ✓")  # valid UTF-8 loads
    if with_hazard:
        lines[6] = product_line(6, name="bell\a")
    content = b"\n".join(lines) + b"\n"
    entry = load(tmp_path, sg_home, ledger, content)
    bad = {line: "invalid_utf8" for line in (2, 3, 4, 5)}
    if with_hazard:
        bad[7] = "control_character"
    check_load(sg_home.duckdb_path, entry, content, bad)


@pytest.mark.parametrize("with_hazard", [False, True], ids=["fast-path", "slow-path"])
def test_ragged_lines_are_quarantined(
    tmp_path: Path, sg_home: Settings, ledger: Ledger, with_hazard: bool
) -> None:
    lines = clean_file(7)
    lines[1] = product_line(1)[:20]
    lines[2] = product_line(2) + b"\textra"
    lines[3] = product_line(3, rating="4\t.5")  # DuckDB: a cast error too; the cause is the tab
    lines[4] = b"4"
    lines[5] = product_line(5) + b"\t"
    if with_hazard:
        lines[7] = product_line(7) + b"\r"
    content = b"\n".join(lines) + b"\n"
    entry = load(tmp_path, sg_home, ledger, content)
    bad = {2: "too_few_fields", 3: "too_many_fields", 4: "too_many_fields"}
    bad |= {5: "too_few_fields", 6: "too_many_fields"}
    check_load(sg_home.duckdb_path, entry, content, bad)


def every_kind_file() -> tuple[bytes, dict[int, str]]:
    lines = clean_file(12)
    lines[1] = product_line(1, name="a\x00b")
    lines[3] = product_line(3, rating="four")
    lines[4] = b""
    lines[6] = product_line(6, name="a\rb")
    lines[8] = product_line("eight")
    lines[9] = product_line(9, name="x" * (3 * 1024 * 1024))
    lines[11] = product_line(11, name="\x1b[31mred")
    lines[12] = product_line(12) + b"\t"
    bad = {
        2: "nul_character",
        4: "unparseable_value",
        5: "blank_line",
        7: "stray_carriage_return",
        9: "unparseable_value",
        10: "line_too_long",
        12: "control_character",
        13: "too_many_fields",
    }
    return b"\n".join(lines) + b"\n", bad


def test_every_kind_at_once_keeps_the_original_line_numbers(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    """DuckDB's own rejects on the cleaned copy map back to the original line numbers."""
    content, bad = every_kind_file()
    entry = load(tmp_path, sg_home, ledger, content)
    check_load(sg_home.duckdb_path, entry, content, bad)


def test_postgres_quarantines_the_same_lines(
    tmp_path: Path, ledger: Ledger, postgres_url: str
) -> None:
    content, bad = every_kind_file()
    src = tmp_path / "src"
    src.mkdir()
    (src / "product.csv").write_bytes(content)
    (entry,) = ingest(src, postgres_url, ledger).files
    check_load(postgres_url, entry, content, bad)


# --- the file-level contract still refuses the batch ---------------------------------


def test_a_header_only_product_file_refuses_the_batch(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "query.csv").write_bytes(b"query_id\tquery\tquery_class\n1\tsofa\tSofas\n")
    for content in (HEADER + b"\n", HEADER, HEADER + b"\r\n"):
        (src / "product.csv").write_bytes(content)
        with pytest.raises(IngestError, match=r"product\.csv: .*no data lines"):
            ingest(src, sg_home.duckdb_path, ledger)
    assert not sg_home.duckdb_path.exists()
    assert ledger.ingested_files() == []


def test_a_header_only_optional_file_loads_zero_rows(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "product.csv").write_bytes(b"\n".join(clean_file(2)) + b"\n")
    (src / "query.csv").write_bytes(b"query_id\tquery\tquery_class\n")
    manifest = ingest(src, sg_home.duckdb_path, ledger)
    counts = {
        f.file_name: (f.rows_read, f.rows_accepted, f.rows_quarantined) for f in manifest.files
    }
    assert counts == {"product.csv": (2, 2, 0), "query.csv": (0, 0, 0)}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER + b"\x00", r"line 1 \(header\) has a control character"),
        (HEADER.replace(b"\tproduct_class", b"\rproduct_class"), r"control character"),
        (HEADER + b"\t" + b"x" * MAX_LINE_BYTES, r"line 1 \(header\) is over"),
        (HEADER + b"\t\xff", r"line 1 \(header\) is not valid UTF-8"),
    ],
    ids=["nul", "stray-cr", "too-long", "invalid-utf8"],
)
def test_a_bad_header_still_refuses_the_batch(
    tmp_path: Path, sg_home: Settings, ledger: Ledger, header: bytes, message: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "product.csv").write_bytes(header + b"\n" + product_line(1) + b"\n")
    with pytest.raises(IngestError, match=message):
        ingest(src, sg_home.duckdb_path, ledger)
    assert not sg_home.duckdb_path.exists()


# --- property: random corruptions of generated catalogs ------------------------------

#: Corruptions -> the reason their line is quarantined with. Each one hits one line.
CORRUPTIONS = {
    "nul": "nul_character",
    "control": "control_character",
    "stray_cr": "stray_carriage_return",
    "invalid_utf8": "invalid_utf8",
    "extra_tab": "too_many_fields",
    "trailing_tabs": "too_many_fields",  # DuckDB alone would drop the empty extra fields
    "missing_tab": "too_few_fields",
    "too_long": "line_too_long",
    "blank": "blank_line",
    "bad_number": "unparseable_value",
}
#: What DuckDB's strict parser cannot be trusted with: a file with one takes the slow path.
HAZARDS = {"nul", "control", "stray_cr", "too_long", "other_newline"}
#: Changes that leave a line loadable: the other line ending, a lone quote in its name.
BENIGN = ("other_newline", "quote")
CONTROL_BYTES = [b for b in range(0x20) if b not in (0x00, 0x09, 0x0A, 0x0D)]
INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xc0\xaf"]


@pytest.fixture(scope="module")
def catalog_lines(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """The lines of a small generated product.csv (header first), without terminators."""
    out = tmp_path_factory.mktemp("catalog")
    result = generate(out, products=MIN_PRODUCTS, seed=11, searches=MIN_SEARCHES)
    return result.files["product"].read_bytes().rstrip(b"\n").split(b"\n")


def insert_at_char(body: bytes, junk: bytes, draw: st.DrawFn, *, inside: bool = False) -> bytes:
    """``junk`` inserted at a character boundary (strictly inside the line if ``inside``)."""
    text = body.decode("utf-8")
    index = draw(st.integers(0, len(text) - 1 if inside else len(text)))
    cut = len(text[:index].encode("utf-8"))
    return body[:cut] + junk + body[cut:]


def corrupt(body: bytes, kind: str, draw: st.DrawFn) -> bytes:
    """The line ``body`` with the corruption or benign change ``kind`` applied."""
    fields = body.split(b"\t")
    if kind == "nul":
        return insert_at_char(body, b"\x00", draw)
    if kind == "control":
        return insert_at_char(body, bytes([draw(st.sampled_from(CONTROL_BYTES))]), draw)
    if kind == "stray_cr":
        return insert_at_char(body, b"\r", draw, inside=True)
    if kind == "invalid_utf8":
        return insert_at_char(body, draw(st.sampled_from(INVALID_UTF8)), draw)
    if kind == "extra_tab":
        return insert_at_char(body, b"\t", draw)
    if kind == "trailing_tabs":
        return body + b"\t" * draw(st.integers(1, 3))
    if kind == "missing_tab":
        index = draw(st.integers(0, len(fields) - 2))
        return b"\t".join(
            [*fields[:index], fields[index] + fields[index + 1], *fields[index + 2 :]]
        )
    if kind == "too_long":
        padding = MAX_LINE_BYTES + 1 - len(body) + draw(st.integers(0, 64))
        fields[4] += b"x" * padding
        return b"\t".join(fields)
    if kind == "blank":
        return b""
    if kind == "bad_number":
        fields[draw(st.sampled_from([0, 6, 7, 8]))] = draw(
            st.sampled_from([b"four", b"4,5", b"n/a"])
        )
        return b"\t".join(fields)
    if kind == "quote":
        name = fields[1].decode("utf-8")
        index = draw(st.integers(0, len(name)))
        fields[1] = (name[:index] + '"' + name[index:]).encode("utf-8")
        return b"\t".join(fields)
    raise AssertionError(kind)


@st.composite
def hostile_files(draw: st.DrawFn, catalog: list[bytes]) -> tuple[bytes, dict[int, str]]:
    """A product.csv of random catalog lines, some changed; and line number -> reason.

    Half the files have no hazard, so that DuckDB's own rejects (the fast path) are
    exercised as often as the line checks.
    """
    hazards = draw(st.booleans())
    kinds_allowed = [k for k in [*CORRUPTIONS, *BENIGN] if hazards or k not in HAZARDS]
    rows = draw(st.lists(st.sampled_from(catalog[1:]), min_size=1, max_size=12))
    kinds = draw(
        st.lists(
            st.one_of(st.none(), st.sampled_from(kinds_allowed)),
            min_size=len(rows),
            max_size=len(rows),
        )
    )
    newline, other = draw(st.sampled_from([(b"\n", b"\r\n"), (b"\r\n", b"\n")]))
    final_newline = draw(st.booleans())
    parts, bad = [HEADER + newline], {}
    for number, (body, kind) in enumerate(zip(rows, kinds, strict=True), start=2):
        end = other if kind == "other_newline" else newline
        if kind in CORRUPTIONS:
            body, bad[number] = corrupt(body, kind, draw), CORRUPTIONS[kind]
        elif kind == "quote":
            body = corrupt(body, kind, draw)
        if number == len(rows) + 1 and not final_newline and body:
            # The last line unterminated; with hazards, a CRLF one may keep its CR.
            end = end[:-1] if hazards else b""
        parts.append(body + end)
    return b"".join(parts), bad


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_corruptions_never_refuse_the_file(
    catalog_lines: list[bytes], data: st.DataObject
) -> None:
    content, bad = data.draw(hostile_files(catalog_lines))
    with tempfile.TemporaryDirectory(prefix="shelfguard-hostile-") as tmp:
        folder = Path(tmp)
        ledger = open_ledger(f"sqlite:///{folder / 'ledger.sqlite'}")
        try:
            entry = ingest_product_file(folder / "src", folder / "w.duckdb", ledger, content)
            check_load(folder / "w.duckdb", entry, content, bad)
        finally:
            ledger.dispose()
