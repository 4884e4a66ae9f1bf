"""Content-addressed artifacts: models and indexes stored by their sha256.

A run trains its model and builds its index in its own folder
(``<artifact root>/runs/<run>``). When the model or index is registered in the
ledger it is copied, once, to ``<artifact root>/objects/<kind>/<sha256>`` and the
ledger's artifact row points there. Aliases, approvals and rollbacks therefore name
content, not a run's folder: deleting or cleaning a run's folder never breaks the
champion, and the same content produced twice is stored once.

Writes are all-or-nothing for readers: on a local disk the copy goes to a temporary
sibling renamed into place; on an object store (no atomic rename) a marker object
``<sha256>.complete`` is written last and an object without its marker is copied
again. Works on any fsspec URL the artifact root can be.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
from upath import UPath

from shelfguard.config import Settings
from shelfguard.failpoints import failpoint
from shelfguard.ledger import ArtifactRecord, Ledger

#: What is stored by content (the ledger's artifact kinds).
OBJECT_KINDS = ("model", "index")


def objects_root(settings: Settings) -> UPath:
    """``<artifact root>/objects``."""
    return UPath(settings.artifact_root) / "objects"


def object_uri(settings: Settings, kind: str, sha256: str) -> str:
    """Where the ``kind`` artifact with this content hash is stored."""
    if kind not in OBJECT_KINDS:
        raise ValueError(f"{kind!r} is not stored by content (kinds: {', '.join(OBJECT_KINDS)})")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256: {sha256[:70]!r}")
    return str(objects_root(settings) / kind / sha256)


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def store(settings: Settings, kind: str, source: str, sha256: str) -> str:
    """Copy the folder at ``source`` to its content address (unless there already) and
    return that URI. ``sha256`` is the folder's hash as its producer computed it."""
    target = object_uri(settings, kind, sha256)
    if _is_local(target) and _is_local(source):
        destination = _local(target)
        if destination.is_dir():
            return target
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".{sha256}.{uuid.uuid4().hex[:8]}.partial")
        shutil.copytree(_local(source), partial)
        failpoint("artifact.copying")  # a crash leaves a partial copy, never the object
        try:
            partial.rename(destination)
        except OSError:  # another process stored the same content first
            shutil.rmtree(partial, ignore_errors=True)
            if not destination.is_dir():
                raise
        return target
    fs, path = fsspec.core.url_to_fs(target)
    marker = path + ".complete"
    if fs.exists(marker):
        return target
    source_fs, source_path = fsspec.core.url_to_fs(source)
    base = source_path.rstrip("/")
    for name in source_fs.find(base):
        relative = name[len(base) + 1 :]
        with source_fs.open(name, "rb") as reader, fs.open(f"{path}/{relative}", "wb") as out:
            shutil.copyfileobj(reader, out)
    failpoint("artifact.copying")  # copied, but without its marker: copied again
    with fs.open(marker, "wb") as out:
        out.write(sha256.encode("ascii"))
    return target


def register(
    settings: Settings,
    ledger: Ledger,
    run_id: str,
    kind: str,
    source: str,
    sha256: str,
    meta: dict[str, Any],
) -> ArtifactRecord:
    """Store the folder ``source`` by content (:func:`store`) and record it as a ``kind``
    artifact the run produced: what the champion points at never depends on the run's
    own folder. Idempotent: a rerun after a crash between the two finds the object
    stored and records it (failpoint ``<kind>.stored``)."""
    uri = store(settings, kind, source, sha256)
    failpoint(f"{kind}.stored")
    return ledger.record_artifact(kind, uri, sha256, produced_by_run=run_id, meta=meta)


@dataclass(frozen=True)
class Collected:
    """What :func:`collect` found: the objects removed (or that would be) and kept."""

    removed: list[dict[str, Any]]
    kept: int
    #: Partial copies an interrupted store left behind (older than :data:`PARTIAL_AGE`).
    partials: list[str] = field(default_factory=list)


#: A partial copy this old is no longer being written: gc removes it.
PARTIAL_AGE = timedelta(hours=1)


def _referenced(ledger: Ledger, keep_days: float) -> set[tuple[str, str]]:
    """(kind, sha256) of every object something may still need."""
    keep: set[tuple[str, str]] = set()
    cutoff = datetime.now(UTC) - timedelta(days=keep_days)
    for artifact in ledger.artifacts(kinds=OBJECT_KINDS):
        if artifact.created_at >= cutoff:
            keep.add((artifact.kind, artifact.sha256))  # within the retention window
    # Every version a rollback may return to, and every pair a canary served.
    for move in [*ledger.alias_history("champion"), *ledger.alias_history("canary")]:
        for artifact_id in (move.model_artifact_id, move.index_artifact_id):
            found = ledger.get_artifact(artifact_id)
            if found is not None:
                keep.add((found.kind, found.sha256))
    for run in ledger.running_runs():  # pending approvals and runs still working
        for kind in OBJECT_KINDS:
            sha = run.lineage.get(f"{kind}_sha256")
            if sha:
                keep.add((kind, str(sha)))
    return keep


def _stale(fs: Any, entry: str) -> bool:
    """Whether a partial copy was last written more than :data:`PARTIAL_AGE` ago."""
    info = fs.info(entry)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if mtime is None:
        return False
    written = mtime if isinstance(mtime, datetime) else datetime.fromtimestamp(float(mtime), UTC)
    if written.tzinfo is None:
        written = written.replace(tzinfo=UTC)
    return datetime.now(UTC) - written > PARTIAL_AGE


def collect(
    settings: Settings, ledger: Ledger, *, keep_days: float = 7.0, dry_run: bool = False
) -> Collected:
    """Remove stored models and indexes nothing references any more; record what went.

    Kept: every pair the ``champion`` alias ever pointed at (rollback may return to any)
    and every pair the ``canary`` alias did,
    the models and indexes of runs still running (a pending approval among them), and
    everything registered within the last ``keep_days`` days. The ledger keeps its
    artifact rows (the evidence), and records the collection; ``dry_run`` only reports.
    Partial copies that an interrupted store left (unreferenced by construction) go
    too, once they are :data:`PARTIAL_AGE` old.
    """
    keep = _referenced(ledger, keep_days)
    root = objects_root(settings)
    fs, base = fsspec.core.url_to_fs(str(root))
    removed: list[dict[str, Any]] = []
    partials: list[str] = []
    kept = 0
    for kind in OBJECT_KINDS:
        folder = f"{base}/{kind}"
        if not fs.exists(folder):
            continue
        for entry in sorted(fs.ls(folder, detail=False)):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith(".") and name.endswith(".partial"):
                if _stale(fs, entry):
                    partials.append(f"{kind}/{name}")
                    if not dry_run:
                        fs.rm(entry, recursive=True)
                continue
            if name.startswith(".") or name.endswith(".complete"):
                continue
            if (kind, name) in keep:
                kept += 1
                continue
            size = sum(int(fs.info(f).get("size") or 0) for f in fs.find(entry))
            removed.append({"kind": kind, "sha256": name, "bytes": size})
            if not dry_run:
                fs.rm(entry, recursive=True)
                if fs.exists(entry + ".complete"):
                    fs.rm(entry + ".complete")
    if removed and not dry_run:
        ledger.record_collection(removed, keep_days=keep_days)
    return Collected(removed=removed, kept=kept, partials=partials)
