"""The pseudonymisation key stays secret: a whole embedded catalog_refresh, then a search
for the key in every file it could have reached and in every text of the warehouse.

The key is a distinctive sentinel, looked for as text, hex and base64. The run is the real
DAG (Airflow, dbt via Cosmos, GX) through the CLI, as in ``test_catalog_refresh``.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shelfguard.data.generator import generate
from shelfguard.data.pseudonyms import key_path, pseudonym

pytestmark = pytest.mark.airflow
CLI = str(Path(sys.executable).with_name("shelfguard"))
SENTINEL = "SENTINEL-pseudonym-key-4f1d9c27-must-never-be-written"


def sentinel_forms() -> list[bytes]:
    """The sentinel as it could be written: text, hex, base64 (standard and URL-safe)."""
    raw = SENTINEL.encode()
    forms = {raw, raw.hex().encode(), raw.hex().upper().encode()}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms |= {encoded, encoded.rstrip(b"=")}
    return sorted(forms)


def files_under(root: Path, since: float | None = None) -> Iterator[Path]:
    """Regular files under ``root`` (changed at or after ``since``, when given)."""
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            try:
                if not path.is_file() or path.is_symlink():
                    continue
                if since is not None and path.stat().st_mtime < since:
                    continue
            except OSError:
                continue  # removed while walking (another process's temp file)
            yield path


def holds_a_form(path: Path, forms: list[bytes]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(form in data for form in forms)


def run_refresh(home: Path, source: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHELFGUARD_", "AIRFLOW"))}
    env.update(SHELFGUARD_HOME=str(home), SHELFGUARD_PSEUDONYM_KEY=SENTINEL)
    command = [CLI, "run", "catalog_refresh", "--source", str(source), "--json"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture(scope="module")
def refreshed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("sentinel")
    data = generate(root / "data", products=400, seed=11)
    home = root / "home"
    started = time.time() - 1  # file times can be a little behind the clock
    result = run_refresh(home, data.out_dir)
    assert result.stdout.strip(), f"no output; stderr:\n{result.stderr[-3000:]}"
    outcome = json.loads(result.stdout)
    assert (result.returncode, outcome["outcome"]) == (0, "OK"), outcome
    return {"home": home, "data": data, "started": started, "result": result}


def test_the_run_pseudonymised_with_the_sentinel_key(refreshed: dict[str, Any]) -> None:
    home, data = refreshed["home"], refreshed["data"]
    with data.files["search_log"].open(encoding="utf-8", newline="") as handle:
        first = next(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        (stored,) = con.execute(
            "select user_key from raw.search_log where search_id = ? and position = ?",
            [first["search_id"], int(first["position"])],
        ).fetchone() or (None,)
    assert stored == pseudonym(SENTINEL.encode(), first["user_id"])
    assert not key_path(home).exists(), "the environment's key is used; no key file is made"


def test_no_file_under_the_home_holds_the_key(refreshed: dict[str, Any]) -> None:
    forms = sentinel_forms()
    scanned = list(files_under(refreshed["home"]))
    assert any(p.suffix == ".duckdb" for p in scanned) and len(scanned) > 20
    assert [p for p in scanned if holds_a_form(p, forms)] == []


def test_no_temporary_file_of_the_run_holds_the_key(refreshed: dict[str, Any]) -> None:
    forms = sentinel_forms()
    scanned = list(files_under(Path(tempfile.gettempdir()), since=refreshed["started"]))
    assert scanned, "the run wrote temporary files (this test's home among them)"
    assert [p for p in scanned if holds_a_form(p, forms)] == []


def test_the_warehouse_holds_the_key_in_no_view_and_no_text(refreshed: dict[str, Any]) -> None:
    texts = [form.decode() for form in sentinel_forms()]
    with duckdb.connect(str(refreshed["home"] / "warehouse.duckdb"), read_only=True) as con:
        views = con.execute(
            "select schema_name, view_name, sql from duckdb_views() where not internal"
        ).fetchall()
        assert any(schema == "staging" for schema, _, _ in views), "dbt's views exist"
        assert [(s, v) for s, v, sql in views if any(t in (sql or "") for t in texts)] == []
        columns = con.execute(
            "select table_schema, table_name, column_name, data_type "
            "from information_schema.columns "
            "where data_type in ('VARCHAR', 'BLOB') and table_schema not in "
            "('information_schema', 'pg_catalog')"
        ).fetchall()
        assert len(columns) > 20
        found = []
        for schema, table, column, data_type in columns:
            target = f'"{schema}"."{table}"'
            value = f'cast("{column}" as varchar)' if data_type == "BLOB" else f'"{column}"'
            for text in texts:
                (hits,) = con.execute(
                    f"select count(*) from {target} where contains({value}, ?)", [text]
                ).fetchone() or (0,)
                if hits:
                    found.append((schema, table, column, text))
        assert found == []
