"""The Airflow plugin: registers shelfguard with Airflow (loaded from the plugins folder).

It mounts the governance console (:mod:`shelfguard.console`) on Airflow's api-server
under ``/shelfguard`` and adds a "Governance" entry to the UI's navigation, which
shows the console inside Airflow. Each finished run of a shelfguard DAG gets a note
with its outcome (BLOCKED is told apart from a crash) and a link to its console page,
and the gate tasks and ``finalize`` a "Governance evidence" link
(:mod:`shelfguard.airflow.evidence_links`). Airflow mounts plugin apps without authentication:
every console route authenticates through Airflow's auth manager itself.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from shelfguard.airflow.evidence_links import URL_PREFIX, EvidenceLink, RunNotes
from shelfguard.console import create_app


class ShelfguardPlugin(AirflowPlugin):
    """shelfguard's entry in Airflow's plugin registry: the governance console, run
    notes and evidence links."""

    name = "shelfguard"
    fastapi_apps: list[Any] = [  # noqa: RUF012 (the base class declares it so)
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "shelfguard governance console"}
    ]
    external_views: list[Any] = [  # noqa: RUF012
        {
            "name": "Governance",
            # Relative to the UI's base URL, so it also works behind a proxy prefix.
            "href": URL_PREFIX.lstrip("/") + "/",
            "destination": "nav",
            "url_route": "governance",
            "nav_top_level": True,
        }
    ]
    global_operator_extra_links: list[Any] = [EvidenceLink()]  # noqa: RUF012
    listeners: list[Any] = [RunNotes()]  # noqa: RUF012
