"""The Airflow plugin: registers shelfguard with Airflow (loaded from the plugins folder)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class ShelfguardPlugin(AirflowPlugin):
    """shelfguard's entry in Airflow's plugin registry."""

    name = "shelfguard"
