"""Airflow notifiers of shelfguard's own (e-mail uses the SMTP provider's)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

#: Seconds a webhook may take to answer.
WEBHOOK_TIMEOUT = 10.0


class WebhookNotifier(BaseNotifier):
    """POSTs one JSON document to ``url`` (a ``governance.yml`` webhook channel)."""

    template_fields: Sequence[str] = ()

    def __init__(self, *, url: str, payload: dict[str, Any]) -> None:
        super().__init__()
        self.url = url
        self.payload = payload

    def notify(self, context: Any) -> None:
        """POST the payload; an answer other than 2xx raises."""
        request = urllib.request.Request(
            self.url,
            data=json.dumps(self.payload).encode("utf-8"),
            headers={"Content-Type": "application/json", "User-Agent": "shelfguard"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as answer:
            if not 200 <= answer.status < 300:
                raise RuntimeError(f"{self.url} answered {answer.status}")
