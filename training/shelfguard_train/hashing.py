"""sha256 of files and folders: the hashes that bind a result to the exact bytes it came from.

``file_sha256`` hashes one file's bytes (the inputs a model card or manifest records).
``files_sha256`` hashes a list of files under one folder, each framed by its name and
size, so renaming, moving or editing any file changes the hash; ``model_sha256`` (every
file of a saved model) and ``index_sha256`` (the index files in format order) are both
built on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["file_sha256", "files_sha256"]

_BLOCK = 1 << 20


def file_sha256(path: Path) -> str:
    """sha256 (hex) of one file's bytes, to record which inputs a result came from."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def files_sha256(root: Path, names: Iterable[str]) -> str:
    """sha256 over the files ``names`` (POSIX paths relative to ``root``), in the order given.

    Each file contributes its name, a NUL byte, its size as 8 big-endian bytes and its
    content.
    """
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        digest.update(name.encode("utf-8") + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        for block in _blocks(path):
            digest.update(block)
    return digest.hexdigest()


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(_BLOCK), b"")
