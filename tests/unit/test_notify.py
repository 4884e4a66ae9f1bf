"""Notifications reach a real SMTP server and webhook, name what happened, and never
change an outcome when a channel is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from notify_support import Inbox, receivers

from shelfguard import notify
from shelfguard.ledger import Ledger, open_ledger
from shelfguard.policy import Policy, PolicyError, parse_policy

pytestmark = pytest.mark.spread


def _policy(channels: list[dict[str, object]]) -> Policy:
    text = json.dumps({"version": 1, "notify": {"channels": channels}})
    return parse_policy(text.encode(), "governance.yml")


@pytest.fixture
def inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    with receivers() as received:
        for name, value in received.env().items():
            monkeypatch.setenv(name, value)
        yield received


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def _blocked_run(ledger: Ledger) -> str:
    run_id = "catalog_refresh/manual__1"
    ledger.start_run(run_id, "catalog_refresh", triggered_by="carol", lineage={})
    ledger.record_gate(
        run_id,
        "raw_data",
        "fail",
        subject="batch:b1",
        checks=[
            {
                "name": "raw_products.product_id_unique",
                "status": "fail",
                "observed": "12 repeated ids",
            },
            {"name": "raw_products.not_empty", "status": "pass"},
            {"name": "<script>alert(1)</script>", "status": "fail", "message": "{{ 7 * 7 }}"},
        ],
    )
    ledger.finish_run(run_id, "BLOCKED", blocked_gate="raw_data", message="duplicates")
    return run_id


def test_a_blocked_run_is_mailed_and_posted_with_its_gate_and_failed_checks(
    inbox: Inbox, ledger: Ledger
) -> None:
    run_id = _blocked_run(ledger)
    policy = _policy(inbox.channels())
    notice = notify.outcome_notice(ledger, run_id, "file:///reports/r1/report.html")
    assert notify.send(policy, notice) == ["owners", "hook"]
    mail, post = inbox.wait_for("blocked")
    assert post["run_id"] == run_id and post["link"] == "file:///reports/r1/report.html"
    assert "Gate: raw_data" in post["lines"]
    assert "Failed check: raw_products.product_id_unique: 12 repeated ids" in post["lines"]
    assert not any("not_empty" in line for line in post["lines"])  # passing checks stay out
    assert mail["Subject"] == f"[shelfguard] BLOCKED: {run_id} at gate raw_data"
    assert next(iter(mail["To"].addresses)).addr_spec == "owners@example.com"
    body = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "raw_products.product_id_unique" in body and "report.html" in body
    # Ledger texts are data: escaped in HTML, never rendered as a template.
    assert "<script>" not in body and "&lt;script&gt;" in body
    assert "{{ 7 * 7 }}" in body and "49" not in body


def test_a_channel_hears_only_its_events_and_a_plain_ok_run_tells_nobody(
    inbox: Inbox, ledger: Ledger
) -> None:
    run_id = _blocked_run(ledger)
    quiet = _policy(inbox.channels(events=["approval_waiting"]))
    assert notify.send(quiet, notify.outcome_notice(ledger, run_id)) == []
    ledger.start_run("catalog_refresh/ok", "catalog_refresh", triggered_by="cron", lineage={})
    ledger.finish_run("catalog_refresh/ok", "OK")
    assert notify.outcome_notice(ledger, "catalog_refresh/ok") is None
    waiting = notify.approval_notice(ledger, run_id, "Answer: shelfguard approve ...")
    assert notify.send(quiet, waiting) == ["owners", "hook"]
    _mail, post = inbox.wait_for("approval_waiting")
    assert post["title"] == f"Approval waiting: {run_id}"
    assert inbox.posts == [post] and len(inbox.mails) == 1


def test_a_channel_that_is_down_is_logged_and_the_others_still_hear(
    inbox: Inbox, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    run_id = _blocked_run(ledger)
    channels = inbox.channels()
    channels.insert(0, {"name": "gone", "type": "webhook", "url": "http://127.0.0.1:9/hook"})
    assert notify.send(_policy(channels), notify.outcome_notice(ledger, run_id)) == [
        "owners",
        "hook",
    ]
    assert "could not notify gone" in caplog.text
    inbox.wait_for("blocked")


@pytest.mark.parametrize(
    ("channel", "complaint"),
    [
        ({"name": "m", "type": "email"}, "needs to:"),
        ({"name": "m", "type": "email", "to": ["not-an-address"]}, "needs to:"),
        ({"name": "w", "type": "webhook", "url": "ftp://x"}, "http(s)"),
        ({"name": "w", "type": "webhook", "url": "http://x", "events": ["promoted"]}, "events"),
    ],
)
def test_a_channel_without_a_usable_target_is_a_policy_error(
    channel: dict[str, object], complaint: str
) -> None:
    with pytest.raises(PolicyError, match="notify") as refused:
        _policy([channel])
    assert complaint in str(refused.value)
