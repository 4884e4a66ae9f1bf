"""A person's steps in the governance console, in a real Chromium against a real api-server.

The module's tests run in order on one ledger: the rollback happens before the
approval, whose promotion then moves the champion on.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from console_seed import (
    BLOCKED_RUN,
    FAILED_CHECK,
    OWN_RUN,
    PENDING_RUN,
    SAMPLE_VALUE,
    Console,
)

from shelfguard.ledger import Ledger, open_ledger


@pytest.fixture
def ledger(console: Console) -> Iterator[Ledger]:
    """The console's ledger, read from the test's side."""
    opened = open_ledger(console.settings.ledger_url)
    try:
        yield opened
    finally:
        opened.dispose()


def sign_in(chromium: Any, console: Console, user: str, next_path: str = "/shelfguard/") -> Any:
    """A fresh browser session, signed in through Airflow's own login page."""
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "Roll back?" — yes
    page.goto(f"{console.root}/auth/login?next={quote(next_path)}")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(console.passwords[user])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{next_path}")
    return page


def shot(page: Any, screenshots: Path, name: str) -> None:
    """Keep a screenshot of the page as checked."""
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=True)


def test_the_governance_entry_of_airflow_s_navigation_opens_the_console(
    chromium: Any, console: Console, screenshots: Path
) -> None:
    page = sign_in(chromium, console, "data-engineer", next_path="/")
    page.get_by_role("link", name="Governance").click()
    frame = page.frame_locator("iframe")
    frame.get_by_role("heading", name="Runs").wait_for()
    assert frame.get_by_test_id("user").inner_text() == "data-engineer"
    shot(page, screenshots, "airflow-governance-nav")
    page.context.close()


def test_a_blocked_run_shows_its_failed_check_and_sample_rows(
    chromium: Any, console: Console, screenshots: Path
) -> None:
    page = sign_in(chromium, console, "governance-owner")
    page.get_by_label("Outcome").select_option("BLOCKED")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("table.runs tbody tr")
    rows.first.wait_for()
    assert rows.count() == 1
    assert "raw_data" in rows.first.inner_text() and FAILED_CHECK in rows.first.inner_text()
    shot(page, screenshots, "runs-blocked")

    page.get_by_role("link", name=BLOCKED_RUN).click()
    verdict = page.get_by_test_id("verdict")
    verdict.wait_for()
    assert verdict.inner_text().startswith("BLOCKED at gate raw_data")
    failed = page.locator("#failed-checks tr.failrow")
    assert FAILED_CHECK in failed.inner_text()
    assert failed.locator("td.observed").inner_text() == "0.042"
    assert failed.locator("td.limit").inner_text() == "<= 0.01"
    samples = page.locator(f'table.sample-rows[data-check="{FAILED_CHECK}"]')
    assert SAMPLE_VALUE in samples.inner_text()
    assert "84 in all" in page.locator("#failed-checks").inner_text()
    passing = page.locator("#passing-checks")
    assert not passing.locator("td", has_text="raw_duplicate_id_share").is_visible()
    passing.locator("summary").click()
    assert passing.locator("td", has_text="raw_duplicate_id_share").is_visible()
    assert "batch-0002" in page.locator("#inputs").inner_text()
    assert "bad_encoding: 80" in page.locator("#inputs").inner_text()
    assert len(page.get_by_test_id("policy-sha").inner_text()) == 64
    shot(page, screenshots, "run-blocked")

    with page.context.expect_page() as docs:
        page.get_by_role("link", name="validation results").click()
    docs.value.get_by_role("heading", name="Data Docs: raw_products").wait_for()
    page.context.close()


def test_a_data_engineer_has_no_decision_buttons_and_a_direct_post_is_refused(
    chromium: Any, console: Console, screenshots: Path, ledger: Ledger
) -> None:
    page = sign_in(chromium, console, "data-engineer", next_path="/shelfguard/approvals")
    pending = page.locator(f'article.pending[data-run="{PENDING_RUN}"]')
    pending.wait_for()
    assert pending.get_by_role("button").count() == 0
    assert "not an approver" in pending.get_by_test_id("not-approver").inner_text()
    shot(page, screenshots, "approvals-data-engineer")

    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    response = page.request.post(
        f"{console.url}approvals/decide",
        form={"csrf_token": token, "run_id": PENDING_RUN, "decision": "approved"},
        headers={"origin": console.root, "accept": "application/json"},
    )
    assert response.status == 403
    assert "data-engineer is not an approver" in response.json()["detail"]
    assert ledger.approvals(PENDING_RUN) == []

    page.get_by_role("link", name="Champion").click()
    page.get_by_test_id("no-rollback").wait_for()
    assert page.get_by_role("button", name="Roll back to v1").count() == 0
    page.context.close()


def test_rolling_back_from_the_champion_page_restores_the_earlier_pair(
    chromium: Any, console: Console, screenshots: Path, ledger: Ledger
) -> None:
    seeded = console.seeded
    page = sign_in(chromium, console, "governance-owner", next_path="/shelfguard/champion")
    assert page.get_by_test_id("current-version").inner_text() == "2"
    assert page.get_by_test_id("current-model").inner_text() == seeded.models["v2"][:16]
    shot(page, screenshots, "champion-before-rollback")

    page.get_by_role("button", name="Roll back to v1").click()
    page.wait_for_url("**/shelfguard/champion")
    page.get_by_test_id("current-version").filter(has_text="3").wait_for()
    assert page.get_by_test_id("current-model").inner_text() == seeded.models["v1"][:16]
    assert page.get_by_test_id("current-index").inner_text() == seeded.indexes["v1"][:16]
    shot(page, screenshots, "champion-after-rollback")

    champion = ledger.get_alias("champion")
    assert champion is not None and champion.version == 3
    assert (champion.model.sha256, champion.index.sha256) == (
        seeded.models["v1"],
        seeded.indexes["v1"],
    )
    move = ledger.alias_history("champion")[-1]
    assert (move.action, move.moved_by) == ("rollback", "governance-owner")
    assert "governance console" in move.reason
    assert ledger.verify().ok
    page.context.close()


def test_a_governance_owner_approves_a_pending_run_and_it_can_be_promoted(
    chromium: Any, console: Console, screenshots: Path, ledger: Ledger
) -> None:
    from shelfguard.model.promotion import promote

    seeded = console.seeded
    page = sign_in(chromium, console, "governance-owner", next_path="/shelfguard/approvals")
    own = page.locator(f'article.pending[data-run="{OWN_RUN}"]')
    own.wait_for()
    assert own.get_by_role("button", name="Approve").count() == 0
    assert "another approver must approve" in own.inner_text()
    pending = page.locator(f'article.pending[data-run="{PENDING_RUN}"]')
    assert "data-engineer" in pending.inner_text()
    shot(page, screenshots, "approvals-governance-owner")

    pending.get_by_label("Comment").fill("metrics beat the base model")
    pending.get_by_role("button", name="Approve").click()
    decisions = page.locator("#decisions tr.decision")
    decisions.first.wait_for()
    assert "governance-owner" in decisions.first.inner_text()
    assert "metrics beat the base model" in decisions.first.inner_text()
    shot(page, screenshots, "run-approved")

    (approval,) = ledger.approvals(PENDING_RUN)
    assert (approval.decision, approval.decided_by, approval.via) == (
        "approved",
        "governance-owner",
        "hitl",
    )
    assert approval.policy_sha256 == seeded.required_policy.sha256
    assert ledger.verify().ok
    champion = promote(ledger, seeded.required_policy, PENDING_RUN)
    assert champion.model.sha256 == seeded.models["v3"]
    assert champion.version == 4

    page.get_by_role("link", name="Approvals").click()
    page.locator(f'article.pending[data-run="{OWN_RUN}"]').wait_for()
    assert page.locator(f'article.pending[data-run="{PENDING_RUN}"]').count() == 0
    page.context.close()


def test_the_batches_page_shows_states_and_quarantine_by_reason(
    chromium: Any, console: Console, screenshots: Path
) -> None:
    page = sign_in(chromium, console, "data-engineer", next_path="/shelfguard/batches")
    blocked = page.locator('tr[data-batch="batch-0002"]')
    blocked.wait_for()
    assert "blocked" in blocked.inner_text() and "raw_data" in blocked.inner_text()
    assert "bad_encoding: 80" in blocked.locator("td.reasons").inner_text()
    published = page.locator('tr[data-batch="batch-0001"]')
    assert "published" in published.inner_text()
    assert page.locator("svg.bars").count() == 2
    shot(page, screenshots, "batches")
    page.get_by_label("State").select_option("blocked")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**state=blocked")
    assert page.locator("table.batches tbody tr").count() == 1
    page.context.close()
