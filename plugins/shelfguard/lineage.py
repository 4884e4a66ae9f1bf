"""Lineage helpers: the hashes and versions every run records (invariant 5)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from shelfguard.config import project_root


def sha256_file(path: Path) -> str:
    """The sha256 (hex) of a file's bytes (the standard library reads it in blocks)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """The package version plus the git commit of the checkout (``+dirty`` when modified)."""
    try:
        version = metadata.version("shelfguard")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    root = project_root()
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'.dirty' if dirty else ''}"


def ledger_run_id(dag_id: str, airflow_run_id: str) -> str:
    """The ledger's key for a DAG run: Airflow run ids are unique only within one DAG."""
    return f"{dag_id}/{airflow_run_id}"


#: The job namespace of shelfguard's OpenLineage events (its own and the provider's).
OPENLINEAGE_NAMESPACE = "shelfguard"


def openlineage_file_path(home: Path) -> Path:
    """Where the embedded file transport writes: one ``events-<time>.json`` per event."""
    return home / "lineage" / "events"


def openlineage_transport(home: Path) -> str:
    """The provider's ``[openlineage] transport`` value for the embedded file transport."""
    return json.dumps(
        {"type": "file", "log_file_path": str(openlineage_file_path(home)), "append": False}
    )
