"""One real Airflow api-server with the shelfguard plugin, on a seeded home, per session.

The server is started by ``shelfguard.console.server`` (what ``shelfguard ui`` runs) on
a free loopback port, with the two demo users; a headless Chromium (the system's, at
``/usr/bin/chromium``) drives it through Playwright.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from console_seed import Console, write_seeded_home

from shelfguard.config import load_settings

CHROMIUM = os.environ.get("SHELFGUARD_CHROMIUM", "/usr/bin/chromium")
HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """The api-server with the plugin, serving a seeded ledger; stopped at the end."""
    from shelfguard.console.server import (
        ensure_demo_passwords,
        start_api_server,
        stop_api_server,
        wait_until_ready,
    )

    home = tmp_path_factory.mktemp("console") / "home"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SHELFGUARD_")}
    settings = load_settings({**environ, "SHELFGUARD_HOME": str(home)})
    settings.ensure_dirs()
    seeded = write_seeded_home(settings)
    port = _free_port()
    log = home / "logs" / "api-server.log"
    proc = start_api_server(settings, HOST, port, log_path=log)
    try:
        wait_until_ready(proc, HOST, port)
        yield Console(
            f"http://{HOST}:{port}", settings, ensure_demo_passwords(settings), seeded, log
        )
    finally:
        stop_api_server(proc)


@pytest.fixture(scope="module")
def chromium(root_conftest: ModuleType) -> Iterator[Any]:
    """A headless Chromium driven by Playwright; fails under CI=true when there is none.

    Per module, not per session: Playwright's sync API keeps an asyncio loop running in
    the main thread while it is open, and a later test of the same worker calling
    ``asyncio.run`` would fail with "cannot be called from a running event loop".
    """
    require_service = root_conftest.require_service
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        require_service(
            "Chromium",
            f"{CHROMIUM} is missing (`make browser` installs Debian's chromium with apt-get)",
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - a dev dependency
        require_service("Playwright", str(exc))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where each checked page's screenshot goes (printed at the end of the session)."""
    folder = Path(os.environ.get("SHELFGUARD_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
