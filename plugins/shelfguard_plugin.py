"""The Airflow plugin: registers shelfguard with Airflow (loaded from the plugins folder)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


def shelfguard_home() -> str:
    """Jinja macro ``{{ macros.shelfguard.shelfguard_home() }}``: the state folder of this deployment."""
    from shelfguard.config import load_settings

    return str(load_settings().home)


class ShelfguardPlugin(AirflowPlugin):
    """Makes shelfguard's macros available to DAG templates."""

    name = "shelfguard"
    macros = [shelfguard_home]  # noqa: RUF012 -- AirflowPlugin declares it as a list
