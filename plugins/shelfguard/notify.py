"""Telling people what happened: BLOCKED, REJECTED and FAILED runs, approvals that wait,
and champion moves, by e-mail and webhook (``governance.yml → notify``).

Every channel is an Airflow notifier: e-mail through the SMTP provider's
``SmtpNotifier`` (the server and its credentials are an Airflow connection, so no
secret lives in the policy), a webhook through :class:`WebhookNotifier`, which POSTs
one JSON document. A notice names the run, the gate and the checks that failed, or
the decision, and links the evidence (the run's report). Texts taken from the ledger
are sent as they are, never rendered as templates, and escaped in HTML.

Sending is best effort: a mail server that is down is logged and never changes a
run's outcome or a decision (the ledger is the record; a notice only points at it).
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from typing import Any

from shelfguard.ledger import AliasRecord, Ledger
from shelfguard.policy import NotifyChannel, Policy

log = logging.getLogger(__name__)

_OUTCOME_EVENTS = {"BLOCKED": "blocked", "REJECTED": "rejected", "FAILED": "failed"}
_MAX_CHECKS = 10


@dataclass(frozen=True)
class Notice:
    """One thing to tell: what happened, to which run, in a few lines, and where the
    evidence is."""

    event: str
    title: str
    lines: list[str] = field(default_factory=list)
    run_id: str | None = None
    link: str | None = None

    def text(self) -> str:
        """The notice as plain text."""
        body = [self.title, "", *self.lines]
        if self.link:
            body += ["", f"Evidence: {self.link}"]
        return "\n".join(body)

    def html(self) -> str:
        """The notice as a small HTML e-mail body (every text escaped)."""
        items = "".join(f"<li>{html.escape(line)}</li>" for line in self.lines)
        link = (
            f'<p>Evidence: <a href="{html.escape(self.link, quote=True)}">'
            f"{html.escape(self.link)}</a></p>"
            if self.link
            else ""
        )
        return f"<p><strong>{html.escape(self.title)}</strong></p><ul>{items}</ul>{link}"

    def payload(self) -> dict[str, Any]:
        """The notice as the JSON document a webhook receives."""
        return {
            "source": "shelfguard",
            "event": self.event,
            "run_id": self.run_id,
            "title": self.title,
            "lines": self.lines,
            "link": self.link,
        }


def outcome_notice(ledger: Ledger, run_id: str, link: str | None = None) -> Notice | None:
    """The notice a finished run deserves: BLOCKED, REJECTED or FAILED (with the gate and
    its failed checks, or the decision), or the champion it moved; None for a plain OK."""
    run = ledger.get_run(run_id)
    if run is None:
        return None
    event = _OUTCOME_EVENTS.get(run.outcome)
    if event is None:
        promoted = run.lineage.get("promoted_version")
        if promoted is None:
            return None
        alias = ledger.get_alias("champion")
        return Notice(
            "champion_moved",
            f"champion v{promoted}: {run.message or 'promoted by run ' + run_id}",
            [*_pair_lines(alias), f"Run: {run_id} ({run.outcome})"],
            run_id,
            link,
        )
    lines = [f"Run: {run_id}", f"Triggered by: {run.triggered_by or '-'}"]
    if run.outcome == "BLOCKED" and run.blocked_gate:
        lines.append(f"Gate: {run.blocked_gate}")
        failed = [
            check
            for gate in ledger.gate_results(run_id)
            if gate.gate == run.blocked_gate and gate.status == "fail"
            for check in gate.checks
            if check.get("status") == "fail"
        ]
        for check in failed[:_MAX_CHECKS]:
            observed = check.get("message") or check.get("observed")
            lines.append(f"Failed check: {check.get('name')}: {observed}")
        if len(failed) > _MAX_CHECKS:
            lines.append(f"... and {len(failed) - _MAX_CHECKS} more failed checks")
    elif run.message:
        lines.append(run.message)
    title = f"{run.outcome}: {run_id}" + (
        f" at gate {run.blocked_gate}" if run.blocked_gate else ""
    )
    return Notice(event, title, lines, run_id, link)


def approval_notice(ledger: Ledger, run_id: str, how: str, link: str | None = None) -> Notice:
    """An approval waits for a person: which run, which pair, how to answer."""
    run = ledger.get_run(run_id)
    lineage = run.lineage if run else {}
    lines = [
        f"Run: {run_id} (triggered by {run.triggered_by if run else '-'})",
        f"Model: {str(lineage.get('model_sha256') or '-')[:16]}",
        f"Index: {str(lineage.get('index_sha256') or '-')[:16]}",
        how,
    ]
    return Notice(
        "approval_waiting",
        f"Approval waiting: {run_id}",
        lines,
        run_id,
        link,
    )


def champion_notice(alias: AliasRecord, action: str, by: str, reason: str = "") -> Notice:
    """The champion moved outside a run (a rollback on the command line)."""
    lines = _pair_lines(alias) + [f"{action} by {by}"] + ([reason] if reason else [])
    return Notice("champion_moved", f"champion v{alias.version} ({action})", lines, alias.run_id)


def _pair_lines(alias: AliasRecord | None) -> list[str]:
    if alias is None:
        return []
    return [f"Model: {alias.model.sha256[:16]}", f"Index: {alias.index.sha256[:16]}"]


def _notifier(channel: NotifyChannel, notice: Notice) -> Any:
    if channel.type == "webhook":
        from shelfguard.airflow.notifiers import WebhookNotifier

        return WebhookNotifier(url=str(channel.url), payload=notice.payload())
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return SmtpNotifier(
        to=list(channel.to),
        from_email=channel.from_email or "shelfguard@localhost",
        subject=f"[shelfguard] {notice.title}",
        html_content=notice.html(),
        smtp_conn_id=channel.smtp_conn_id,
    )


def send(policy: Policy, notice: Notice | None, context: Any = None) -> list[str]:
    """Tell every channel of ``policy`` that listens to the notice's event; returns the
    names of the channels told. A channel that fails is logged and skipped."""
    if notice is None:
        return []
    told = []
    for channel in policy.notify.channels:
        if notice.event not in channel.events:
            continue
        try:
            # notify() directly: the texts are data, never Jinja templates.
            _notifier(channel, notice).notify(context or {})
        except Exception as exc:
            log.warning("could not notify %s (%s): %s", channel.name, channel.type, exc)
            continue
        told.append(channel.name)
    return told
