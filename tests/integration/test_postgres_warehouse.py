"""The PostgreSQL warehouse: ingestion (COPY) and the training-data export, against DuckDB.

Each test gets a fresh PostgreSQL database. DuckDB is the reference: the same files
ingested into both must give the same manifest, the same raw and quarantine rows, and
after a dbt build on each, the same parquet files for training.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from ingest_support import HEADER, pg_rows, product_line, write

from shelfguard.config import Settings, load_settings
from shelfguard.data.dbt_project import build
from shelfguard.data.generator import generate
from shelfguard.data.ingest import NUL_CHARACTER, SPECS, IngestManifest, ingest
from shelfguard.data.ingest import postgres_load as ingest_module
from shelfguard.data.publication import register_batch
from shelfguard.ledger import Ledger
from shelfguard.model.training import EXPORTS, export_training_data
from shelfguard.policy import load_policy

pytestmark = pytest.mark.integration

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
]
#: One key for both warehouses, so that their pseudonyms compare equal.
PSEUDONYM_KEY = b"integration-tests-pseudonym-key!"
# DuckDB's type names -> PostgreSQL's information_schema.columns.data_type.
PG_TYPE_NAMES = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "SMALLINT": "smallint",
    "VARCHAR": "character varying",
    "DOUBLE": "double precision",
    "TIMESTAMP": "timestamp without time zone",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone",
    "BLOB": "bytea",
}


def new_ledger(path: Path) -> Ledger:
    ledger = Ledger(f"sqlite:///{path}")
    ledger.migrate()
    return ledger


def run_ingest(source: Path, warehouse: Path | str, ledger_path: Path) -> IngestManifest:
    ledger = new_ledger(ledger_path)
    try:
        return ingest(source, warehouse, ledger, pseudonym_key=PSEUDONYM_KEY)
    finally:
        ledger.dispose()


def duck_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql).fetchall()


def comparable(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """NaN equal to NaN, bytes-like as bytes: rows from both drivers compare by value."""

    def value(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return "NaN"
        if isinstance(v, memoryview | bytearray):
            return bytes(v)
        return v

    return [tuple(value(v) for v in row) for row in rows]


def test_postgres_ingest_matches_duckdb_row_for_row(tmp_path: Path, warehouse_url: str) -> None:
    data = generate(tmp_path / "data", products=300, seed=3, defects=ROW_DEFECTS)
    duck_path = tmp_path / "warehouse.duckdb"
    in_duckdb = run_ingest(data.out_dir, duck_path, tmp_path / "duck-ledger.sqlite")
    in_postgres = run_ingest(data.out_dir, warehouse_url, tmp_path / "pg-ledger.sqlite")

    assert in_postgres.to_dict() == in_duckdb.to_dict()
    products = next(f for f in in_postgres.files if f.file_name == "product.csv")
    assert products.rows_quarantined > 0 and products.extra_columns == ["internal_notes"]
    for spec in SPECS:
        columns = dict(
            pg_rows(
                warehouse_url,
                "SELECT column_name, data_type FROM information_schema.columns "
                f"WHERE table_schema = 'raw' AND table_name = '{spec.table}'",
            )
        )
        expected = {name: PG_TYPE_NAMES[t] for name, t in spec.stored_columns.items()}
        expected |= {
            "_line_number": "bigint",
            "_batch_id": "character varying",
            "_file_sha256": "character varying",
            "_ingested_at": "timestamp with time zone",
        }
        assert columns == expected, spec.table

        keep = ", ".join([f'"{name}"' for name in spec.stored_columns])
        keep += ", _line_number, _batch_id, _file_sha256"
        sql = f"SELECT {keep} FROM raw.{spec.table} ORDER BY _file_sha256, _line_number"
        assert comparable(pg_rows(warehouse_url, sql)) == comparable(duck_rows(duck_path, sql))
        quarantined = (
            "SELECT batch_id, file_name, file_sha256, line_number, reason, detail, original_line "
            f"FROM quarantine.{spec.table} ORDER BY file_sha256, line_number"
        )
        assert comparable(pg_rows(warehouse_url, quarantined)) == comparable(
            duck_rows(duck_path, quarantined)
        ), spec.table

    raw_lines = data.files["product"].read_bytes().split(b"\n")
    for line_number, original in pg_rows(
        warehouse_url, "SELECT line_number, original_line FROM quarantine.products"
    ):
        assert bytes(original) == raw_lines[line_number - 1]
    # One transaction, one timestamp for the whole batch.
    stamps = pg_rows(
        warehouse_url,
        " UNION ".join(f"SELECT DISTINCT _ingested_at FROM raw.{s.table}" for s in SPECS),
    )
    assert len(stamps) == 1


def test_reingest_adds_nothing_even_when_the_ledger_lost_the_batch(
    tmp_path: Path, warehouse_url: str
) -> None:
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1), product_line("x")])
    write(src, "query.csv", [b"query_id\tquery\tquery_class", b"1\tsofa\tSofas"])
    ledger_path = tmp_path / "ledger.sqlite"
    first = run_ingest(src, warehouse_url, ledger_path)
    again = run_ingest(src, warehouse_url, ledger_path)
    assert first.batch_id == again.batch_id
    assert all(f.already_ingested for f in again.files)
    # The warehouse committed but the ledger never heard of it (a crash in between):
    # the next ingest loads the files again, replacing their rows, never doubling them.
    replayed = run_ingest(src, warehouse_url, tmp_path / "fresh-ledger.sqlite")
    assert not any(f.already_ingested for f in replayed.files)
    counts = (
        "SELECT (SELECT count(*) FROM raw.products), (SELECT count(*) FROM quarantine.products), "
        "(SELECT count(*) FROM raw.queries)"
    )
    assert pg_rows(warehouse_url, counts) == [(1, 1, 1)]


def test_a_failure_while_loading_rolls_back_the_whole_batch_and_records_nothing(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    ledger_path = tmp_path / "ledger.sqlite"
    run_ingest(src, warehouse_url, ledger_path)

    write(src, "product.csv", [HEADER.encode(), product_line(1), product_line(2)])
    write(src, "query.csv", [b"query_id\tquery\tquery_class", b"1\tsofa\tSofas"])
    real = ingest_module._pg_write_file
    written: list[str] = []

    def fail_on_second_file(*args: Any, **kwargs: Any) -> Any:
        if written:
            raise RuntimeError("connection lost")
        result = real(*args, **kwargs)
        written.append(result.file_name)
        return result

    monkeypatch.setattr(ingest_module, "_pg_write_file", fail_on_second_file)
    with pytest.raises(RuntimeError, match="connection lost"):
        run_ingest(src, warehouse_url, ledger_path)
    assert written == ["product.csv"]
    assert pg_rows(warehouse_url, "SELECT product_id FROM raw.products") == [(1,)]
    assert pg_rows(warehouse_url, "SELECT count(*) FROM raw.queries") == [(0,)]
    ledger = new_ledger(ledger_path)
    try:
        assert [f.file_name for f in ledger.ingested_files()] == ["product.csv"]
    finally:
        ledger.dispose()


def test_text_is_stored_exactly_and_nul_characters_are_quarantined(
    tmp_path: Path, warehouse_url: str
) -> None:
    names = [
        "'); DROP TABLE products;--",
        '=HYPERLINK("x")',
        '"Quoted"',
        "Cloud sofa 🛋️✨",
        "أريكة مخملية",
        'quote " inside, and a comma',
        "back\\slash \\N",
    ]
    lines = [HEADER.encode()] + [product_line(i, n) for i, n in enumerate(names, 1)]
    lines.append(product_line(99, "nul\x00byte"))
    src = tmp_path / "src"
    path = write(src, "product.csv", lines, newline=b"\r\n")
    (entry,) = run_ingest(src, warehouse_url, tmp_path / "ledger.sqlite").files
    assert (entry.rows_read, entry.rows_accepted, entry.rows_quarantined) == (8, 7, 1)
    assert entry.quarantine_by_reason == {NUL_CHARACTER: 1}
    assert entry.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = pg_rows(warehouse_url, "SELECT product_name FROM raw.products ORDER BY product_id")
    assert [row[0] for row in stored] == names
    ((line, reason, detail, original),) = pg_rows(
        warehouse_url, "SELECT line_number, reason, detail, original_line FROM quarantine.products"
    )
    assert (line, reason) == (9, NUL_CHARACTER)
    assert "product_name" in detail
    assert bytes(original) == product_line(99, "nul\x00byte")


def _settings(home: Path, warehouse_url: str) -> Settings:
    settings = load_settings(
        {"SHELFGUARD_HOME": str(home), "SHELFGUARD_WAREHOUSE_URL": warehouse_url}
    )
    settings.ensure_dirs()
    return settings


def test_dbt_builds_on_the_ingested_tables_and_the_export_matches_duckdb(
    tmp_path: Path, warehouse_url: str
) -> None:
    data = generate(tmp_path / "data", products=300, seed=7)
    policy = load_policy()
    exports = {}
    for name, url in (
        ("duckdb", f"duckdb:///{tmp_path / 'warehouse.duckdb'}"),
        ("postgres", warehouse_url),
    ):
        settings = _settings(tmp_path / f"home-{name}", url)
        manifest = run_ingest(data.out_dir, url, tmp_path / f"{name}-ledger.sqlite")
        register_batch(settings, manifest.batch_id, [(f.table, f.sha256) for f in manifest.files])
        result = build(settings, policy, candidate_batch=manifest.batch_id)
        assert result.success, result.log_tail
        exports[name] = export_training_data(settings, "snapshot-1")

    duck, pg = exports["duckdb"], exports["postgres"]
    assert pg.rows == duck.rows and all(pg.rows.values())
    for file_name in EXPORTS:
        ours, reference = (
            pq.read_table(pg.data_dir / file_name),
            pq.read_table(duck.data_dir / file_name),
        )
        assert ours.schema == reference.schema, file_name
        assert ours.schema.field("product_id").type == "int64"
        ours_rows, reference_rows = ours.to_pylist(), reference.to_pylist()
        for mine, theirs in zip(ours_rows, reference_rows, strict=True):
            # dbt computes the pair weights with each database's float arithmetic.
            if "weight" in mine:
                assert mine.pop("weight") == pytest.approx(theirs.pop("weight"), rel=1e-12)
            assert mine == theirs, file_name
    # The parquet holds exactly what PostgreSQL holds (no loss in the CSV round trip).
    weights = pg_rows(
        warehouse_url,
        "SELECT weight FROM marts.fct_training_pairs ORDER BY pair_id",
    )
    assert pq.read_table(pg.data_dir / "pairs.parquet").column("weight").to_pylist() == [
        w for (w,) in weights
    ]
    # A snapshot is written once: a second export reads the files already there.
    again = export_training_data(_settings(tmp_path / "home-postgres", warehouse_url), "snapshot-1")
    assert again.rows == pg.rows


# --- personal data on PostgreSQL ---------------------------------------------------------

SEARCH_HEADER = (
    "search_id\tsession_id\tuser_id\tuser_email\tsearched_at\tquery\tproduct_id"
    "\tposition\tclicked\tadded_to_cart\tpurchased"
)


def search_line(search: int, user: int, clicked: str = "0") -> bytes:
    return (
        f"q{search}\ts{search}\tu{user:06d}\tfirst.last{user}@example.com"
        f"\t2026-11-01T10:00:00Z\tblack sofa\t1\t1\t{clicked}\t0\t0"
    ).encode()


def test_postgres_without_the_key_in_the_environment_refuses_and_writes_nothing(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shelfguard.data.pseudonyms import PseudonymKeyError

    monkeypatch.delenv("SHELFGUARD_PSEUDONYM_KEY", raising=False)
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    write(src, "search_log.csv", [SEARCH_HEADER.encode(), search_line(1, 7)])
    ledger = new_ledger(tmp_path / "ledger.sqlite")
    try:
        with pytest.raises(PseudonymKeyError, match="SHELFGUARD_PSEUDONYM_KEY is not set"):
            ingest(src, warehouse_url, ledger)
        assert ledger.ingested_files() == []
    finally:
        ledger.dispose()
    assert pg_rows(warehouse_url, "SELECT to_regclass('raw.search_log')") == [(None,)]


def test_postgres_stores_pseudonyms_restricts_quarantine_and_purges_it(
    tmp_path: Path, warehouse_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta

    from shelfguard.data.ingest import purge_expired_quarantine
    from shelfguard.data.pseudonyms import pseudonym

    monkeypatch.setenv("SHELFGUARD_PSEUDONYM_KEY", PSEUDONYM_KEY.decode())
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])
    lines = [SEARCH_HEADER.encode(), search_line(1, 7), search_line(2, 8, clicked="yes")]
    write(src, "search_log.csv", lines)
    ledger = new_ledger(tmp_path / "ledger.sqlite")
    try:
        ingest(src, warehouse_url, ledger)  # the key from the environment
        columns = {
            name
            for (name,) in pg_rows(
                warehouse_url,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = 'raw' AND table_name = 'search_log'",
            )
        }
        assert "user_key" in columns and not {"user_id", "user_email"} & columns
        assert pg_rows(warehouse_url, "SELECT user_key FROM raw.search_log") == [
            (pseudonym(PSEUDONYM_KEY, "u000007"),)
        ]
        # Quarantine keeps the line's bytes, personal fields included: PUBLIC may not read it.
        assert pg_rows(
            warehouse_url,
            "SELECT has_table_privilege('public', 'quarantine.search_log', 'SELECT')",
        ) == [(False,)]
        assert pg_rows(warehouse_url, "SELECT count(*) FROM quarantine.search_log") == [(1,)]

        ledger.start_run("run-pg", "catalog_refresh")
        now = datetime.now(UTC)
        assert purge_expired_quarantine(warehouse_url, ledger, 30, now=now) == []
        later = now + timedelta(days=31)
        (purge,) = purge_expired_quarantine(warehouse_url, ledger, 30, run_id="run-pg", now=later)
        assert (purge.table_name, purge.rows, purge.run_id) == (
            "quarantine.search_log",
            1,
            "run-pg",
        )
        assert ledger.retention_purges() == [purge]
        assert pg_rows(warehouse_url, "SELECT count(*) FROM quarantine.search_log") == [(0,)]
        assert pg_rows(warehouse_url, "SELECT count(*) FROM raw.search_log") == [(1,)]
    finally:
        ledger.dispose()


def test_an_older_postgres_search_log_is_pseudonymised_in_place(
    tmp_path: Path, warehouse_url: str
) -> None:
    from shelfguard.data.pseudonyms import pseudonym

    engine = sa.create_engine(warehouse_url)
    try:
        with engine.begin() as conn:
            for statement in (
                "CREATE SCHEMA raw",
                "CREATE SCHEMA staging",
                "CREATE TABLE raw.search_log (search_id varchar, session_id varchar, "
                "user_id varchar, user_email varchar, searched_at timestamp, query varchar, "
                "product_id bigint, position integer, clicked smallint, added_to_cart smallint, "
                "purchased smallint, _line_number bigint, _batch_id varchar, "
                "_file_sha256 varchar, _ingested_at timestamptz)",
                "INSERT INTO raw.search_log VALUES ('q1', 's1', 'u000001', 'a.b1@example.com', "
                "'2026-11-01', 'sofa', 1, 1, 0, 0, 0, 2, 'batch-old', 'f1', now())",
                # The staging view an older release built: it hashed in SQL, key included.
                "CREATE VIEW staging.stg_behaviour__search_impressions AS SELECT search_id, "
                "md5('old-key-in-the-view' || user_id) AS user_key FROM raw.search_log",
            ):
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()
    src = tmp_path / "src"
    write(src, "product.csv", [HEADER.encode(), product_line(1)])

    run_ingest(src, warehouse_url, tmp_path / "ledger.sqlite")

    assert pg_rows(
        warehouse_url, "SELECT search_id, user_key, _batch_id, _line_number FROM raw.search_log"
    ) == [("q1", pseudonym(PSEUDONYM_KEY, "u000001"), "batch-old", 2)]
    columns = pg_rows(
        warehouse_url,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = 'raw' AND table_name = 'search_log' "
        "AND column_name IN ('user_id', 'user_email')",
    )
    assert columns == []
    assert pg_rows(
        warehouse_url, "SELECT count(*) FROM pg_views WHERE definition LIKE '%old-key%'"
    ) == [(0,)]
    assert pg_rows(
        warehouse_url,
        "SELECT count(*) FROM pg_indexes WHERE schemaname = 'raw' "
        "AND indexname = 'search_log_file_sha256_idx'",
    ) == [(1,)]
