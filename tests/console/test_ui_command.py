"""``shelfguard ui``: the real command starts the api-server and prints how to sign in."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_shelfguard_ui_prints_the_console_url_and_two_working_demo_users(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHELFGUARD_")}
    env["SHELFGUARD_HOME"] = str(tmp_path / "home")
    proc = subprocess.Popen(
        [sys.executable, "-m", "shelfguard.cli", "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed: list[str] = []
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in printed):
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line)
        text = "".join(printed)
        assert f"governance console: http://127.0.0.1:{port}/shelfguard/" in text, text
        users = dict(re.findall(r"user (\S+) \(\w+\), password (\S+)", text))
        assert set(users) == {"governance-owner", "data-engineer"}
        for name, password in users.items():
            token = httpx.post(
                f"http://127.0.0.1:{port}/auth/token",
                json={"username": name, "password": password},
            )
            assert token.status_code == 201, token.text
            page = httpx.get(
                f"http://127.0.0.1:{port}/shelfguard/runs",
                cookies={"_token": token.json()["access_token"]},
            )
            assert page.status_code == 200 and f">{name}</b>" in page.text
        stat = (
            tmp_path / "home" / "airflow" / "simple_auth_manager_passwords.json.generated"
        ).stat()
        assert stat.st_mode & 0o077 == 0
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # Stopping the command stops the server and its workers: nothing answers on the port.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5)
