"""Ingestion against the real DuckDB and the real ledger (SQLite, and PostgreSQL once)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import duckdb
import pytest
from ingest_support import HEADER, product_line, write

from shelfguard.config import Settings
from shelfguard.data.ingest import IngestError, ingest
from shelfguard.ledger import Ledger

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture
def ledger(sg_home: Settings) -> Ledger:
    led = Ledger(sg_home.ledger_url)
    led.migrate()
    yield led
    led.dispose()


def rows(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_clean_file_loads_every_row_and_records_the_manifest(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    path = write(
        tmp_path / "src", "product.csv", [HEADER.encode()] + [product_line(i) for i in range(1, 6)]
    )
    manifest = ingest(path.parent, sg_home.duckdb_path, ledger, run_id=None)
    (entry,) = manifest.files
    assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (entry.rows_read, entry.rows_accepted, entry.rows_quarantined) == (5, 5, 0)
    assert entry.bytes == path.stat().st_size
    assert rows(sg_home, "select count(*), sum(product_id) from raw.products") == [(5, 15)]
    recorded = ledger.ingested_files(batch_id=manifest.batch_id)
    assert [(r.file_name, r.rows_accepted) for r in recorded] == [("product.csv", 5)]


def test_row_level_defects_are_quarantined_with_reason_and_original_bytes(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    bad = {
        3: (product_line(2)[:20], "too_few_fields"),
        4: (product_line(3) + b"\textra", "too_many_fields"),
        5: (product_line(4, name="cafe chair").replace(b"cafe", b"caf\xff\xfe"), "invalid_utf8"),
        6: (product_line(5, rating="four"), "unparseable_value"),
        7: (b"", "blank_line"),
        8: (product_line("six"), "unparseable_value"),
    }
    lines = (
        [HEADER.encode(), product_line(1)] + [bad[n][0] for n in sorted(bad)] + [product_line(9)]
    )
    src = tmp_path / "src"
    write(src, "product.csv", lines)
    manifest = ingest(src, sg_home.duckdb_path, ledger)
    (entry,) = manifest.files
    assert entry.rows_read == 8
    assert entry.rows_accepted == 2
    assert entry.rows_quarantined == 6
    assert entry.rows_read == entry.rows_accepted + entry.rows_quarantined
    quarantined = rows(
        sg_home, "select line_number, reason, original_line from quarantine.products order by 1"
    )
    assert [(n, r) for n, r, _ in quarantined] == [(n, bad[n][1]) for n in sorted(bad)]
    for line_number, _, original in quarantined:
        assert bytes(original) == bad[line_number][0], f"line {line_number} not kept byte for byte"
    accepted = rows(sg_home, "select product_id, _line_number from raw.products order by 2")
    assert accepted == [(1, 2), (9, 9)], "accepted rows keep their source line number"
    assert entry.quarantine_by_reason == {
        "blank_line": 1,
        "invalid_utf8": 1,
        "too_few_fields": 1,
        "too_many_fields": 1,
        "unparseable_value": 2,
    }


def test_reingest_adds_nothing(tmp_path: Path, sg_home: Settings, ledger: Ledger) -> None:
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1), product_line("x")])
    first = ingest(src, sg_home.duckdb_path, ledger)
    second = ingest(src, sg_home.duckdb_path, ledger)
    assert first.batch_id == second.batch_id
    assert second.files[0].already_ingested
    assert second.files[0].rows_accepted == first.files[0].rows_accepted
    assert rows(sg_home, "select count(*) from raw.products") == [(1,)]
    assert rows(sg_home, "select count(*) from quarantine.products") == [(1,)]
    assert len(ledger.ingested_files(batch_id=first.batch_id)) == 1


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.replace("product_class\t", ""), "missing required column(s) product_class"),
        (HEADER.replace("product_name", "product_title"), "unexpected column(s): product_title"),
    ],
)
def test_missing_column_refuses_the_batch_and_writes_nothing(
    tmp_path: Path, sg_home: Settings, ledger: Ledger, header: str, message: str
) -> None:
    src = tmp_path / "src"
    write(src, "query.csv", [b"query_id\tquery\tquery_class", b"1\tsofa\tSofas"])
    write(src, "product.csv", [header.encode(), b"1\ta\tb\tc\td\te\t1\t2\t3"])
    with pytest.raises(IngestError, match=r"product\.csv") as excinfo:
        ingest(src, sg_home.duckdb_path, ledger)
    assert message in str(excinfo.value)
    assert not sg_home.duckdb_path.exists()
    assert ledger.ingested_files() == []


def test_empty_and_missing_files_fail_with_the_file_named(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(IngestError, match=r"none of the files a batch is made of is here"):
        ingest(src, sg_home.duckdb_path, ledger)
    (src / "product.csv").write_bytes(b"")
    with pytest.raises(IngestError, match=r"product\.csv: the file is empty"):
        ingest(src, sg_home.duckdb_path, ledger)


def test_a_bad_file_rolls_back_the_good_ones(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    ingest(src, sg_home.duckdb_path, ledger)
    write(src, "product.csv", [HEADER.encode(), product_line(1), product_line(2)])
    write(src, "label.csv", [b"id\tquery_id\tlabel", b"1\t1\tExact"])
    with pytest.raises(IngestError, match=r"label\.csv: missing required column\(s\) product_id"):
        ingest(src, sg_home.duckdb_path, ledger)
    assert rows(sg_home, "select count(*) from raw.products") == [(1,)]


def test_text_is_stored_exactly_as_given(tmp_path: Path, sg_home: Settings, ledger: Ledger) -> None:
    names = [
        "'); DROP TABLE products;--",
        '=HYPERLINK("x")',
        "Cloud sofa 🛋️✨",
        "أريكة مخملية",
        'quote " inside',
        "back\\slash",
    ]
    src = tmp_path / "src"
    write(
        src, "product.csv", [HEADER.encode()] + [product_line(i, n) for i, n in enumerate(names, 1)]
    )
    ingest(src, sg_home.duckdb_path, ledger)
    stored = [
        r[0] for r in rows(sg_home, "select product_name from raw.products order by product_id")
    ]
    assert stored == names
    assert (
        rows(sg_home, "select count(*) from information_schema.tables where table_name='products'")[
            0
        ][0]
        >= 1
    )


def test_extra_columns_are_reported_and_rows_kept(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    src = tmp_path / "src"
    write(
        src, "product.csv", [(HEADER + "\tinternal_notes").encode(), product_line(1) + b"\tsecret"]
    )
    (entry,) = ingest(src, sg_home.duckdb_path, ledger).files
    assert entry.extra_columns == ["internal_notes"]
    assert entry.rows_accepted == 1


def test_crlf_files_and_reordered_columns_load(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)], newline=b"\r\n")
    write(
        src, "query.csv", [b"query\tquery_id\tquery_class", b"grey sofa\t7\tSofas"], newline=b"\r\n"
    )
    manifest = ingest(src, sg_home.duckdb_path, ledger)
    assert [f.rows_accepted for f in manifest.files] == [1, 1]
    assert rows(sg_home, "select query_id, query, query_class from raw.queries") == [
        (7, "grey sofa", "Sofas")
    ]
    assert rows(sg_home, "select product_name from raw.products") == [("oak table",)]


def test_reads_the_real_wands_query_file(tmp_path: Path, sg_home: Settings, ledger: Ledger) -> None:
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    shutil.copy(FIXTURES / "wands" / "query.csv", src / "query.csv")
    manifest = ingest(src, sg_home.duckdb_path, ledger)
    query_entry = next(f for f in manifest.files if f.file_name == "query.csv")
    assert (query_entry.rows_read, query_entry.rows_accepted, query_entry.rows_quarantined) == (
        480,
        480,
        0,
    )
    assert rows(sg_home, "select query, query_class from raw.queries where query_id = 0") == [
        ("salon chair", "Massage Chairs")
    ]
    lines = (FIXTURES / "wands" / "query.csv").read_text(encoding="utf-8").splitlines()[1:]
    classes = {line.split("\t")[2] for line in lines} - {""}
    assert rows(sg_home, "select count(distinct query_class) from raw.queries") == [(len(classes),)]


def test_manifest_goes_to_a_postgres_ledger(
    tmp_path: Path, sg_home: Settings, postgres_url: str
) -> None:
    led = Ledger(postgres_url)
    led.migrate()
    try:
        src = tmp_path / "src"
        write(src, "product.csv", [HEADER.encode(), product_line(1), product_line("bad")])
        manifest = ingest(src, sg_home.duckdb_path, led, run_id=None)
        (recorded,) = led.ingested_files(batch_id=manifest.batch_id)
        assert (recorded.rows_read, recorded.rows_accepted, recorded.rows_quarantined) == (2, 1, 1)
        assert recorded.quarantine_by_reason == {"unparseable_value": 1}
    finally:
        led.dispose()


ROW_DEFECTS = [
    "duplicate_ids",
    "empty_names",
    "bad_numbers",
    "out_of_range",
    "schema_extra",
    "bad_utf8",
    "ragged_rows",
    "orphan_judgements",
    "golden_leak",
    "category_shift",
]


def test_generated_data_with_every_row_level_defect(tmp_path: Path, sg_home: Settings) -> None:
    """Through the CLI, as a data engineer would: exit 0, counts add up, bytes kept, lines right."""
    import json
    import os
    import subprocess
    import sys

    from shelfguard.data.generator import generate

    data = generate(tmp_path / "data", products=1500, seed=3, defects=ROW_DEFECTS)
    cli = [
        str(Path(sys.executable).with_name("shelfguard")),
        "ingest",
        "--source",
        str(data.out_dir),
    ]
    env = {**os.environ, "SHELFGUARD_HOME": str(sg_home.home)}
    first = subprocess.run([*cli, "--json"], capture_output=True, text=True, env=env, check=False)
    assert first.returncode == 0, first.stderr
    manifest = json.loads(first.stdout)
    by_file = {f["file_name"]: f for f in manifest["files"]}
    assert set(by_file) == {p.name for p in data.files.values()}
    for entry in by_file.values():
        assert entry["rows_read"] == entry["rows_accepted"] + entry["rows_quarantined"]
        assert sum(entry["quarantine_by_reason"].values()) == entry["rows_quarantined"]
    products = by_file["product.csv"]
    assert products["rows_read"] == data.rows["product"]
    assert {"invalid_utf8", "unparseable_value"} <= set(products["quarantine_by_reason"])
    assert products["quarantine_by_reason"].keys() & {"too_few_fields", "too_many_fields"}
    assert products["extra_columns"] == ["internal_notes"]

    raw_lines = data.files["product"].read_bytes().split(b"\n")
    quarantined = rows(
        sg_home, "select line_number, reason, original_line from quarantine.products"
    )
    assert len(quarantined) == products["rows_quarantined"]
    for line_number, reason, original in quarantined:
        assert reason
        assert bytes(original) == raw_lines[line_number - 1]
    for product_id, line_number in rows(
        sg_home, "select product_id, _line_number from raw.products"
    ):
        assert raw_lines[line_number - 1].split(b"\t", 1)[0] == str(product_id).encode()

    human = subprocess.run(cli, capture_output=True, text=True, env=env, check=False)
    assert human.returncode == 0
    assert "every file was already ingested: nothing was added" in human.stdout
    assert f"{products['rows_quarantined']:,}" in human.stdout
    totals = rows(
        sg_home,
        "select (select count(*) from raw.products), (select count(*) from quarantine.products)",
    )
    assert totals == [(products["rows_accepted"], products["rows_quarantined"])]


# --- personal data: pseudonymised at ingest, quarantine kept for a while only ----------

SEARCH_HEADER = (
    "search_id\tsession_id\tuser_id\tuser_email\tsearched_at\tquery\tproduct_id"
    "\tposition\tclicked\tadded_to_cart\tpurchased"
)
PSEUDONYM_KEY = b"a-test-key-of-at-least-32-bytes!"


def search_line(
    search: int, user: int, position: int = 1, when: str = "2026-11-01T10:00:00Z"
) -> bytes:
    return (
        f"q{search}\ts{search}\tu{user:06d}\tfirst.last{user}@example.com\t{when}\tblack sofa"
        f"\t{position}\t{position}\t0\t0\t0"
    ).encode()


def columns(settings: Settings, schema: str, table: str) -> list[str]:
    return [
        str(name)
        for (name,) in rows(
            settings,
            "select column_name from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position",
        )
    ]


def test_search_log_is_stored_with_pseudonyms_only(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    from shelfguard.data.pseudonyms import pseudonym

    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    bad = search_line(3, 7).replace(b"\t1\t0\t0\t0", b"\tfirst\t0\t0\t0")
    lines = [SEARCH_HEADER.encode(), search_line(1, 7), search_line(2, 8), bad]
    write(src, "search_log.csv", lines)

    ingest(src, sg_home.duckdb_path, ledger, pseudonym_key=PSEUDONYM_KEY)

    stored = columns(sg_home, "raw", "search_log")
    assert "user_key" in stored
    assert not {"user_id", "user_email"} & set(stored)
    assert rows(sg_home, "select search_id, user_key from raw.search_log order by 1") == [
        ("q1", pseudonym(PSEUDONYM_KEY, "u000007")),
        ("q2", pseudonym(PSEUDONYM_KEY, "u000008")),
    ]
    # The whole file's text holds no user id or e-mail outside quarantine.
    text = " ".join(str(v) for row in rows(sg_home, "select * from raw.search_log") for v in row)
    assert "u000007" not in text and "@example.com" not in text
    # Quarantine keeps the original line, personal fields included (purged later).
    (original,) = rows(sg_home, "select original_line from quarantine.search_log")
    assert bytes(original[0]) == bad


def test_without_a_key_the_embedded_home_key_file_is_used(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    from shelfguard.data.pseudonyms import key_path, pseudonym

    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    write(src, "search_log.csv", [SEARCH_HEADER.encode(), search_line(1, 7)])
    ingest(src, sg_home.duckdb_path, ledger)
    key = key_path(sg_home.home).read_bytes()
    assert rows(sg_home, "select user_key from raw.search_log") == [(pseudonym(key, "u000007"),)]


def test_an_older_search_log_with_clear_columns_is_pseudonymised_in_place(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    from shelfguard.data.pseudonyms import pseudonym

    # The table as an older release stored it, and a staging view that hashed in SQL.
    with duckdb.connect(str(sg_home.duckdb_path)) as con:
        con.execute("create schema raw")
        con.execute("create schema staging")
        con.execute(
            "create table raw.search_log (search_id varchar, session_id varchar, "
            "user_id varchar, user_email varchar, searched_at timestamp, query varchar, "
            "product_id bigint, position integer, clicked smallint, added_to_cart smallint, "
            "purchased smallint, _line_number bigint, _batch_id varchar, "
            "_file_sha256 varchar, _ingested_at timestamp with time zone)"
        )
        con.execute(
            "insert into raw.search_log values "
            "('q1', 's1', 'u000001', 'a.b1@example.com', '2026-11-01', 'sofa', 1, 1, 0, 0, 0, 2, "
            "'batch-old', 'f1', now()), "
            "('q2', 's2', null, null, '2026-11-01', 'lamp', 1, 1, 0, 0, 0, 3, "
            "'batch-old', 'f1', now())"
        )
        con.execute(
            "create view staging.stg_behaviour__search_impressions as select search_id, "
            "sha256('old-key-in-the-view' || user_id) as user_key from raw.search_log"
        )
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])

    ingest(src, sg_home.duckdb_path, ledger, pseudonym_key=PSEUDONYM_KEY)

    stored = columns(sg_home, "raw", "search_log")
    assert not {"user_id", "user_email"} & set(stored)
    assert rows(
        sg_home,
        "select search_id, user_key, _batch_id, _line_number from raw.search_log order by 1",
    ) == [
        ("q1", pseudonym(PSEUDONYM_KEY, "u000001"), "batch-old", 2),
        ("q2", None, "batch-old", 3),
    ]
    assert rows(sg_home, "select count(*) from duckdb_views() where sql ilike '%old-key%'") == [
        (0,)
    ]
    # A second ingest finds nothing left to migrate and keeps the rows.
    ingest(src, sg_home.duckdb_path, ledger, pseudonym_key=PSEUDONYM_KEY)
    assert rows(sg_home, "select count(*) from raw.search_log") == [(2,)]


def test_expired_quarantined_personal_lines_are_purged_and_recorded(
    tmp_path: Path, sg_home: Settings, ledger: Ledger
) -> None:
    from datetime import UTC, datetime, timedelta

    from shelfguard.data.ingest import purge_expired_quarantine

    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1), product_line("bad")])
    bad = [search_line(n, n).replace(b"\t1\t0\t0\t0", b"\tone\t0\t0\t0") for n in (1, 2, 3)]
    write(src, "search_log.csv", [SEARCH_HEADER.encode(), search_line(9, 9), *bad])
    ingest(src, sg_home.duckdb_path, ledger, pseudonym_key=PSEUDONYM_KEY)
    with duckdb.connect(str(sg_home.duckdb_path)) as con:
        # Two lines quarantined 40 days ago, one yesterday; products are not personal.
        con.execute(
            "update quarantine.search_log set quarantined_at = now() - interval 40 day "
            "where line_number in (3, 4)"
        )
        con.execute("update quarantine.products set quarantined_at = now() - interval 400 day")
    ledger.start_run("run-1", "catalog_refresh")
    now = datetime.now(UTC)

    purged = purge_expired_quarantine(sg_home.duckdb_path, ledger, 30, run_id="run-1", now=now)

    assert [(p.table_name, p.rows, p.run_id) for p in purged] == [
        ("quarantine.search_log", 2, "run-1")
    ]
    assert purged[0].cutoff == now - timedelta(days=30)
    assert ledger.retention_purges() == purged
    assert rows(sg_home, "select line_number from quarantine.search_log") == [(5,)]
    assert rows(sg_home, "select count(*) from quarantine.products") == [(1,)]
    # Nothing left to purge: nothing recorded.
    assert purge_expired_quarantine(sg_home.duckdb_path, ledger, 30, run_id="run-1") == []
    assert len(ledger.retention_purges()) == 1
