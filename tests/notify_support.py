"""Loopback receivers for notifications: a real SMTP server and an HTTP webhook.

``receivers()`` starts both on 127.0.0.1 (free ports) and yields an :class:`Inbox`
with what they received; :meth:`Inbox.channels` gives the ``governance.yml`` notify
channels that point at them, and :meth:`Inbox.env` the Airflow connection of the
SMTP server (``AIRFLOW_CONN_<ID>``) the e-mail channel names.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

SMTP_CONN_ID = "shelfguard_test_smtp"


@dataclass
class Inbox:
    """What the receivers got, in arrival order."""

    smtp_port: int
    webhook_url: str
    mails: list[EmailMessage] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)

    def channels(self, events: list[str] | None = None) -> list[dict[str, Any]]:
        """``notify.channels`` entries for both receivers (every event unless ``events``)."""

        def extra() -> dict[str, Any]:
            # A list of its own per channel: YAML would write a shared one as an anchor,
            # which the policy loader refuses.
            return {"events": list(events)} if events else {}

        return [
            {
                "name": "owners",
                "type": "email",
                "to": ["owners@example.com"],
                "smtp_conn_id": SMTP_CONN_ID,
                **extra(),
            },
            {"name": "hook", "type": "webhook", "url": self.webhook_url, **extra()},
        ]

    def env(self) -> dict[str, str]:
        """The Airflow connection of the SMTP server, as an environment variable."""
        uri = f"smtp://127.0.0.1:{self.smtp_port}?disable_tls=true&disable_ssl=true&timeout=10"
        return {f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}": uri}

    def wait_for(self, event: str, timeout: float = 60) -> tuple[EmailMessage, dict[str, Any]]:
        """The first mail and webhook post about ``event`` (waits for them to arrive)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            posts = [p for p in self.posts if p.get("event") == event]
            mails = [m for m in self.mails if m.get("X-Event") == event or _about(m, event)]
            if posts and mails:
                return mails[0], posts[0]
            time.sleep(0.1)
        raise AssertionError(
            f"no {event} notice: {[p.get('event') for p in self.posts]} posted, "
            f"{[str(m['Subject']) for m in self.mails]} mailed"
        )


_TITLES = {
    "blocked": "BLOCKED",
    "rejected": "REJECTED",
    "failed": "FAILED",
    "approval_waiting": "Approval waiting",
    "champion_moved": "champion v",
}


def _about(mail: EmailMessage, event: str) -> bool:
    return _TITLES[event] in str(mail["Subject"])


class _Mailbox:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.inbox.mails.append(message)  # type: ignore[arg-type]
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def receivers() -> Iterator[Inbox]:
    """Start the SMTP server and the webhook receiver on loopback; stop them after."""
    posts: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return

    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    port = _free_port()
    inbox = Inbox(smtp_port=port, webhook_url=f"http://127.0.0.1:{http.server_port}/hook")
    inbox.posts = posts
    smtp = Controller(_Mailbox(inbox), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        yield inbox
    finally:
        smtp.stop()
        http.shutdown()
        http.server_close()
