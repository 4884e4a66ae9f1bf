"""The Airflow plugin: registers shelfguard with Airflow (loaded from the plugins folder).

It mounts the governance console (:mod:`shelfguard.console`) on Airflow's api-server
under ``/shelfguard`` and adds a "Governance" entry to the UI's navigation, which
shows the console inside Airflow. Airflow mounts plugin apps without authentication:
every console route authenticates through Airflow's auth manager itself.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from shelfguard.console import URL_PREFIX, create_app


class ShelfguardPlugin(AirflowPlugin):
    """shelfguard's entry in Airflow's plugin registry: the governance console."""

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
