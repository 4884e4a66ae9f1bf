"""The governance console: shelfguard's pages inside Airflow's UI (see docs/console.md).

A FastAPI app that the Airflow plugin (``plugins/shelfguard_plugin.py``) mounts under
``/shelfguard`` on Airflow's api-server. Airflow mounts plugin apps without
authentication, so every route authenticates through Airflow's auth manager itself
(:mod:`shelfguard.console.auth`). Pages are rendered on the server from the ledger;
the few decisions (approve, reject, roll back) are recorded in the ledger with the
signed-in user as their author.
"""

from __future__ import annotations

from shelfguard.airflow.evidence_links import URL_PREFIX
from shelfguard.console.app import create_app

__all__ = ["URL_PREFIX", "create_app"]
