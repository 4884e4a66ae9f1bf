"""A private PostgreSQL server for fault tests: its own data folder, port and socket.

The fault tests stop, crash and restart the server under a running workload, so they
never use the machine's shared service (port 5432): :class:`PgServer` runs ``initdb``
into a fresh temporary folder and ``pg_ctl`` on a free port, with the Unix socket in
that folder, trust authentication and the superuser ``postgres``. Only TCP on
127.0.0.1 is served.

``initdb`` refuses to run as root, and so does ``postgres``. As root, every command
runs as the ``postgres`` OS user (``runuser -u postgres``; ``nobody`` where there is
no such user), and the folder, created with :func:`tempfile.mkdtemp` outside pytest's
0700 ``tmp_path``, is handed to that user.

``fsync`` is off: a crash here is the server's processes dying (``pg_ctl stop -m
immediate``: SIGQUIT, no checkpoint, recovery from the WAL at the next start), never
the machine losing its page cache, so the WAL the server wrote is still there to
recover from.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

#: The shared service's port: never started on, stopped or connected to here.
SHARED_PORT = 5432
StopMode = Literal["smart", "fast", "immediate"]
_SEARCH = ("/usr/local/bin", "/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")


class PgServerError(RuntimeError):
    """``initdb`` or ``pg_ctl`` failed; the message carries its output and the log's tail."""


def find_binaries() -> tuple[Path, Path] | str:
    """``(initdb, pg_ctl)``, or the reason they cannot be used here."""
    for folder in [os.environ.get("SHELFGUARD_TEST_PG_BIN", ""), *_SEARCH]:
        for match in sorted(glob.glob(folder), reverse=True) if folder else []:
            initdb, pg_ctl = Path(match, "initdb"), Path(match, "pg_ctl")
            if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
                return initdb, pg_ctl
    on_path = shutil.which("initdb"), shutil.which("pg_ctl")
    if on_path[0] and on_path[1]:
        return Path(on_path[0]), Path(on_path[1])
    return (
        "no initdb/pg_ctl in /usr/local/bin, /usr/lib/postgresql/*/bin or on PATH "
        "(set SHELFGUARD_TEST_PG_BIN to their folder)"
    )


def _run_as() -> str | None:
    """The OS user to run the server as when this process is root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PgServerError("running as root and there is no 'postgres' or 'nobody' user")


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (never 5432)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != SHARED_PORT:
            return port


class PgServer:
    """One private PostgreSQL server: ``initdb`` on creation, then :meth:`start`.

    Use it as a context manager, or call :meth:`cleanup` (stops it, removes the folder).
    """

    def __init__(self, binaries: tuple[Path, Path], *, prefix: str = "shelfguard-pg-") -> None:
        self.initdb, self.pg_ctl = binaries
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._command(
            self.initdb,
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            what="initdb",
        )

    def __enter__(self) -> PgServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.cleanup()

    # commands

    def _command(self, program: Path, *args: str, what: str, timeout: float = 120) -> str:
        command = [str(program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        # stdin/stdout are never a pipe the postmaster could inherit and keep open:
        # its output goes to the log file (-l), pg_ctl's own to a temporary file.
        with tempfile.TemporaryFile() as out:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=self.root,
                check=False,
            )
            out.seek(0)
            text = out.read().decode(errors="replace")
        if result.returncode != 0:
            raise PgServerError(
                f"{what} exited with {result.returncode}:\n{text}\n--- log tail ---\n{self.tail()}"
            )
        return text

    def _options(self) -> str:
        return (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=60 -c shared_buffers=32MB"
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.port == SHARED_PORT:  # pragma: no cover - free_port never returns it
            raise PgServerError("refusing to run on the shared service's port")
        self._command(
            self.pg_ctl,
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-w",
            "-t",
            "60",
            "-o",
            self._options(),
            what="pg_ctl start",
        )

    def stop(self, mode: StopMode = "fast") -> None:
        """Stop the server: ``fast`` rolls back and disconnects; ``immediate`` is a crash."""
        self._command(
            self.pg_ctl, "stop", "-D", str(self.data), "-m", mode, "-w", what=f"pg_ctl stop {mode}"
        )

    def crash(self) -> None:
        """Kill the server as a crash would (``stop -m immediate``); :meth:`start` recovers."""
        self.stop("immediate")

    def restart(self, mode: StopMode = "immediate") -> None:
        """``pg_ctl restart -m MODE``: by default a crash and recovery, same port."""
        self._command(
            self.pg_ctl,
            "restart",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-m",
            mode,
            "-w",
            "-t",
            "60",
            "-o",
            self._options(),
            what=f"pg_ctl restart {mode}",
        )

    def running(self) -> bool:
        """True while a postmaster serves this data folder (``pg_ctl status``)."""
        command = [str(self.pg_ctl), "status", "-D", str(self.data)]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False
        )
        return result.returncode == 0

    def postmaster_pid(self) -> int | None:
        """The postmaster's process id while it runs (first line of postmaster.pid)."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def cleanup(self) -> None:
        """Stop the server if it runs (``immediate``: nothing left to keep) and remove it all."""
        try:
            if self.running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    # databases

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server (psycopg2, TCP, no password)."""
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` and return its URL."""
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def tail(self, lines: int = 30) -> str:
        """The last lines of the server's log."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return f"(no log: {exc})"
        return "\n".join(text.splitlines()[-lines:])
