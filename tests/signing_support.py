"""Test signers: one Ed25519 key per name for the whole test session, and policy entries.

Unit tests sign in memory; tests that run the CLI write the same keys into a keys
folder (:func:`write_keys`) pointed at by ``SHELFGUARD_KEYS_DIR``.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shelfguard.signing import Signer


@cache
def signer(name: str) -> Signer:
    """``name``'s key (the same one every time in a session)."""
    return Signer(name, Ed25519PrivateKey.generate())


def approvers(*names: str, without_key: tuple[str, ...] = ()) -> list[Any]:
    """``approval.approvers`` entries: each name with its public key (but ``without_key``)."""
    return [
        name if name in without_key else {"name": name, "key": signer(name).public_key}
        for name in names
    ]


def approvers_yaml(*names: str, indent: int = 4) -> str:
    """The same entries as YAML lines under ``approvers:`` (indented by ``indent``)."""
    pad = " " * indent
    return "".join(f"{pad}- name: {n}\n{pad}  key: {signer(n).public_key}\n" for n in names)


def write_keys(folder: Path, *names: str) -> Path:
    """Write the signers' private keys into ``folder`` (0700, keys 0600) as the CLI reads them."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in names:
        pem = signer(name).private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path = folder / f"{name}.key"
        path.write_bytes(pem)
        os.chmod(path, 0o600)
    return folder
