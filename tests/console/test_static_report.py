"""The static report (``shelfguard report``) reads like the console's Run page: the
failed checks first with their sample rows, passing checks collapsed, counts as counts,
each decision listed once."""

from __future__ import annotations

import re

from console_seed import (
    BLOCKED_RUN,
    FAILED_CHECK,
    PROMOTED_RUNS,
    PUBLISHED_RUN,
    SAMPLE_VALUE,
    write_seeded_home,
)

from shelfguard.config import Settings
from shelfguard.ledger import open_ledger
from shelfguard.reports import write_report


def _report(settings: Settings, run_id: str) -> str:
    ledger = open_ledger(settings.ledger_url)
    try:
        return write_report(settings, ledger, run_id).read_text(encoding="utf-8")
    finally:
        ledger.dispose()


def test_the_failed_check_and_its_rows_come_before_the_passing_ones(sg_home: Settings) -> None:
    write_seeded_home(sg_home)
    html = _report(sg_home, BLOCKED_RUN)
    headings = re.findall(r"<h2>([^<]+)</h2>", html)
    assert headings[:2] == ["Failed checks", "Gates"], headings
    failed = html.index("<h2>Failed checks</h2>")
    check = html.index(FAILED_CHECK, failed)
    rows = html.index("Sample offending rows (84 in all)", check)
    assert check < rows < html.index(SAMPLE_VALUE, rows) < html.index("<h2>Gates</h2>")
    (passing,) = re.findall(
        r"<details><summary>(\d+) passing checks</summary>(.*?)</details>", html, re.S
    )
    assert passing[0] == "2", "rows_accounted_for and raw_duplicate_id_share"
    assert "raw_duplicate_id_share" in passing[1] and FAILED_CHECK not in passing[1]


def test_a_promoted_run_lists_its_approval_once_and_counts_as_integers(sg_home: Settings) -> None:
    write_seeded_home(sg_home)
    ledger = open_ledger(sg_home.ledger_url)
    (evaluation,) = [g for g in ledger.gate_results(PROMOTED_RUNS[0]) if g.gate == "evaluation"]
    overall = {**evaluation.metrics["overall"]}
    overall["challenger"] = {**overall["challenger"], "n_queries": 200.0}
    ledger.record_gate(
        PROMOTED_RUNS[0],
        "evaluation",
        "pass",
        subject=evaluation.subject,
        checks=list(evaluation.checks),
        metrics={"overall": overall},
    )
    ledger.dispose()
    html = _report(sg_home, PROMOTED_RUNS[0])
    assert "Failed checks" not in html
    assert html.count("answered in Airflow") == 1, "one row per decision"
    assert "<td>200</td>" in html and "200.0000" not in html
    # It ingested nothing itself: the report names the run that published its data.
    assert "No ingested files are linked" not in html
    assert f"published by catalog_refresh run <code>{PUBLISHED_RUN}</code>" in html
