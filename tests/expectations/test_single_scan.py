"""The raw suites counted in one scan per table: the verdicts and counts of GX's own path.

Every raw defect the generator injects is landed (module-scoped home, as in
test_raw_data_gate), and the raw suites are run on its batch twice: counted in one scan
of each table, and with each expectation computed by GX's own queries. Both must agree
on every check. The statements a gate sends are counted by SQLAlchemy's
``before_cursor_execute`` event, on GX's engine and the gate's alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from shelfguard.data.generator import DEFECTS
from shelfguard.data.ingest import SPECS
from shelfguard.gates import run_gate
from shelfguard.gates.common import gate_suites
from shelfguard.policy import load_policy
from shelfguard.quality import SAMPLE_LIMIT, RowScope, load_suite, run_suites

# Defects the contract refuses at ingest (the file never lands) have no rows to judge.
_NOT_LANDED = {"schema_missing", "schema_renamed"}
RAW_DEFECTS = sorted(set(DEFECTS) - _NOT_LANDED)
_RAW_TABLE = re.compile(r"\braw\.([a-z_]+)\b")


def batch_scope(home: Any, run_id: str) -> RowScope:
    """The rows of the run's batch, as the raw_data gate scopes them."""
    inputs = home.ledger.get_run(run_id).lineage["inputs"]
    tables = {spec.file_name: f"raw.{spec.table}" for spec in SPECS}
    return RowScope(
        column="_file_sha256", partitions={tables[name]: sha for name, sha in inputs.items()}
    )


def raw_checks(home: Any, run_id: str, *, single_scan: bool) -> dict[str, dict[str, Any]]:
    scope = batch_scope(home, run_id)
    policy = load_policy()
    names, _ = gate_suites("raw_data", policy)
    report = run_suites(
        [load_suite(name, policy, scope) for name in names],
        warehouse_url=home.settings.warehouse_url,
        gx_root=home.settings.home,
        run_name=f"{run_id}-{'scan' if single_scan else 'per-expectation'}",
        scope=scope,
        single_scan=single_scan,
    )
    return {check["name"]: check for check in report.checks}


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every statement sent through SQLAlchemy while the test runs."""
    seen: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", capture)


@pytest.mark.parametrize("defect", ["clean", *RAW_DEFECTS])
def test_the_scan_agrees_with_gx_per_expectation_on_every_raw_defect(
    home: Any, defect: str
) -> None:
    run_id = home.land(*([] if defect == "clean" else [defect]))

    scanned = raw_checks(home, run_id, single_scan=True)
    separate = raw_checks(home, run_id, single_scan=False)

    assert scanned.keys() == separate.keys()
    for name, check in scanned.items():
        other = separate[name]
        assert (check["status"], check.get("unexpected_count")) == (
            other["status"],
            other.get("unexpected_count"),
        ), name
        assert (check["observed"], check["expected"]) == (other["observed"], other["expected"])
        if check["status"] in ("fail", "warn"):
            assert 0 < len(check["sample_rows"]) <= SAMPLE_LIMIT, name


def test_failed_scanned_checks_sample_their_offending_rows(home: Any) -> None:
    checks = raw_checks(home, home.land("out_of_range"), single_scan=True)

    rating = checks["raw_products.average_rating_in_range"]

    assert rating["status"] == "fail"
    assert 0 < len(rating["sample_rows"]) <= SAMPLE_LIMIT
    for row in rating["sample_rows"]:
        assert set(row) == {"product_id", "_line_number", "average_rating"}
        assert not 0 <= row["average_rating"] <= 5


def test_a_raw_gate_reads_each_table_at_most_three_times(home: Any, statements: list[str]) -> None:
    run_id = home.land()
    run_gate("raw_data", run_id, settings=home.settings, ledger=home.ledger)  # warm GX
    statements.clear()

    outcome = run_gate("raw_data", run_id, settings=home.settings, ledger=home.ledger)

    assert outcome.status == "pass", outcome.summary
    reads = Counter(table for s in statements for table in set(_RAW_TABLE.findall(s)))
    assert set(reads) >= {"products", "search_log", "judgements"}, reads
    assert max(reads.values()) <= 3, reads
    # Each suite's own table: one scan for every row check, whatever their number.
    scans = Counter(
        table for s in statements if "unexpected_0" in s for table in _RAW_TABLE.findall(s)
    )
    assert scans == {"products": 1, "search_log": 1, "judgements": 1}, scans


def test_a_check_that_cannot_be_computed_is_reported_alone(home: Any) -> None:
    run_id = home.land()
    scope = batch_scope(home, run_id)
    suite = load_suite("raw_products", load_policy(), scope)
    broken = suite.expectations[0]
    missing = replace(broken, kwargs={**broken.kwargs, "column": "no_such_column"})
    suite = replace(suite, expectations=(missing, *suite.expectations[1:]))

    report = run_suites(
        [suite],
        warehouse_url=home.settings.warehouse_url,
        gx_root=home.settings.home,
        run_name=f"{run_id}-broken",
        scope=scope,
    )

    by_name = {c["name"]: c for c in report.checks}
    failed = by_name[suite.check_name(broken.id)]
    assert failed["status"] == "fail"
    assert failed["message"].startswith("could not be evaluated")
    assert "no_such_column" in failed["message"]
    others = [c for name, c in by_name.items() if name != suite.check_name(broken.id)]
    assert others and all(c["status"] == "pass" for c in others)
    assert report.runs[0].rows == 400
