"""Personal Ed25519 keys and signed decision statements (invariant 10).

On the command line a decision (approve, reject, rollback, batch purge, a policy
approval) carries an author the system verified: the person signs a statement
with their own private key, and the ledger keeps the statement, the public key and
the signature together in a DSSE envelope (the signing envelope in-toto and
Sigstore use)::

    {"payloadType": "application/vnd.shelfguard.decision+json",
     "payload": "<base64 of the canonical JSON statement>",
     "signatures": [{"keyid": "ed25519:<base64 public key>", "sig": "<base64>"}]}

The signature covers DSSE's pre-authentication encoding of the payload type and the
payload, so a statement can never be replayed as another kind of document. Whose key
it is comes from the policy: ``governance.yml → approval.approvers`` lists each
approver with the public key ``shelfguard keys new NAME`` printed for them.

Keys live in ``$SHELFGUARD_KEYS_DIR`` (default ``~/.shelfguard/keys``): ``NAME.key``
(the private key, PEM, mode 0600, in a 0700 folder) and ``NAME.pub``. A private key
that other users can read is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from shelfguard.ledger.chain import canonical_json

KEYS_DIR_ENV = "SHELFGUARD_KEYS_DIR"
PAYLOAD_TYPE = "application/vnd.shelfguard.decision+json"
#: The ``kind`` of every statement this module writes.
STATEMENT_KIND = "shelfguard.decision/v1"
KEY_PREFIX = "ed25519:"
_KEY_RE = re.compile(r"^ed25519:[A-Za-z0-9+/]{43}=$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")


class SigningError(ValueError):
    """A key is missing, unreadable or unsafe, or a signature does not verify."""


def keys_dir() -> Path:
    """Where personal keys live: ``$SHELFGUARD_KEYS_DIR``, else ``~/.shelfguard/keys``."""
    override = os.environ.get(KEYS_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else Path.home() / ".shelfguard" / "keys"


def check_name(name: str) -> str:
    """A key name is a person's approver name: letters, digits, ``._@-``, at most 100."""
    if not _NAME_RE.fullmatch(name or ""):
        raise SigningError(
            f"{name[:40]!r} cannot name a key: use letters, digits and . _ @ - "
            "(at most 100 characters, starting with a letter or digit)"
        )
    return name


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64 of the 32 raw bytes>``: how a policy lists a public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> Ed25519PublicKey:
    """The public key of an ``ed25519:<base64>`` text; :class:`SigningError` otherwise."""
    if not isinstance(text, str) or not _KEY_RE.fullmatch(text):
        raise SigningError("a public key is 'ed25519:' followed by 44 base64 characters")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise SigningError(f"not an Ed25519 public key: {exc}") from exc


@dataclass(frozen=True)
class Signer:
    """A person's private key, loaded for signing statements under their name."""

    name: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> str:
        """The ``ed25519:…`` text of this signer's public key."""
        return public_key_text(self.private_key.public_key())

    def sign(self, statement: Mapping[str, Any]) -> dict[str, Any]:
        """A DSSE envelope of ``statement`` signed with this key."""
        payload = canonical_json(statement)
        signature = self.private_key.sign(_pae(payload))
        return {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode("ascii"),
            "signatures": [
                {"keyid": self.public_key, "sig": base64.b64encode(signature).decode("ascii")}
            ],
        }


def _pae(payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding of (payload type, payload)."""
    kind = PAYLOAD_TYPE.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def new_key(name: str, folder: Path | None = None, *, force: bool = False) -> tuple[Path, str]:
    """Write a new key pair for ``name``; return the private key's path and the public key.

    The folder is created 0700 and the private key 0600 (written that way, never
    widened). An existing key is kept unless ``force``: replacing it makes every
    policy that lists the old public key refuse this person's signatures.
    """
    check_name(name)
    folder = folder or keys_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    private = folder / f"{name}.key"
    if private.exists() and not force:
        raise SigningError(
            f"{private} exists already: `shelfguard keys show {name}` prints its public key "
            "(--force replaces it, and the policy must then list the new public key)"
        )
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    partial = private.with_name(private.name + ".partial")
    partial.unlink(missing_ok=True)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    partial.replace(private)
    public = public_key_text(key.public_key())
    (folder / f"{name}.pub").write_text(public + "\n", encoding="utf-8")
    return private, public


def load_signer(name: str, folder: Path | None = None) -> Signer:
    """The signer ``name`` from the keys folder; refuses a missing or exposed key."""
    check_name(name)
    folder = folder or keys_dir()
    private = folder / f"{name}.key"
    if not private.is_file():
        raise SigningError(
            f"no signing key for {name} in {folder}: create one with `shelfguard keys new "
            f"{name}` and have a governance owner add its public key to approval.approvers"
        )
    mode = stat.S_IMODE(private.stat().st_mode)
    if mode & 0o077:
        raise SigningError(
            f"{private} can be read by other users (mode {mode:o}): "
            f"run `chmod 600 {private}`, or make a new key if it may have been copied"
        )
    try:
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{private} is not a readable private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{private} is not an Ed25519 key")
    return Signer(name, key)


def public_key_of(name: str, folder: Path | None = None) -> str:
    """The public key of ``name``'s key pair (from its private key, so it always matches)."""
    return load_signer(name, folder).public_key


def utc_text(moment: datetime) -> str:
    """A moment as UTC ISO 8601 to the second: how statements and the ledger agree on time."""
    stamp = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return stamp.replace(microsecond=0).isoformat()


def signing_time() -> datetime:
    """Now, in UTC, to the second (a statement's time must survive the ledger's round trip)."""
    return datetime.now(UTC).replace(microsecond=0)


def statement(action: str, by: str, at: datetime, **subject: Any) -> dict[str, Any]:
    """A decision statement: what was decided (``action``), by whom, when, on what."""
    return {"kind": STATEMENT_KIND, "action": action, "by": by, "at": utc_text(at), **subject}


@dataclass(frozen=True)
class Verified:
    """An envelope whose signature verified: the statement and the key that signed it."""

    statement: dict[str, Any]
    keyid: str


def open_envelope(envelope: Mapping[str, Any] | None) -> Verified:
    """Verify a DSSE envelope's signature and return its statement; :class:`SigningError`
    when it is missing, malformed, of another payload type, or its signature fails."""
    if not envelope:
        raise SigningError("the decision is not signed")
    try:
        if envelope.get("payloadType") != PAYLOAD_TYPE:
            raise SigningError(f"unexpected payload type {str(envelope.get('payloadType'))[:60]}")
        signatures = envelope["signatures"]
        if not isinstance(signatures, list) or len(signatures) != 1:
            raise SigningError("a decision carries exactly one signature")
        keyid = str(signatures[0]["keyid"])
        payload = base64.b64decode(str(envelope["payload"]), validate=True)
        signature = base64.b64decode(str(signatures[0]["sig"]), validate=True)
    except (KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise SigningError(f"malformed signature envelope: {exc}") from exc
    try:
        parse_public_key(keyid).verify(signature, _pae(payload))
    except InvalidSignature as exc:
        raise SigningError(
            "the signature does not verify: the statement or key was altered"
        ) from exc
    try:
        found = json.loads(payload)
    except ValueError as exc:
        raise SigningError(f"the signed payload is not JSON: {exc}") from exc
    if not isinstance(found, dict) or found.get("kind") != STATEMENT_KIND:
        raise SigningError("the signed payload is not a shelfguard decision statement")
    return Verified(found, keyid)


def check_envelope(
    envelope: Mapping[str, Any] | None, expected: Mapping[str, Any], key: str | None
) -> str | None:
    """Why ``envelope`` does not prove ``expected`` signed with ``key``, or None when it does.

    ``expected`` is the statement rebuilt from the ledger row; ``key`` the public key the
    policy lists for its author (None: the policy lists none).
    """
    try:
        verified = open_envelope(envelope)
    except SigningError as exc:
        return str(exc)
    if verified.statement != dict(expected):
        differs = sorted(
            k
            for k in set(verified.statement) | set(expected)
            if verified.statement.get(k) != expected.get(k)
        )
        return f"the signed statement differs from the record in {', '.join(differs)}"
    if key is None:
        return f"the policy lists no public key for {expected.get('by')}"
    if verified.keyid != key:
        return f"signed with a key that is not the one the policy lists for {expected.get('by')}"
    return None


def decision_statement(
    action: str,
    by: str,
    at: datetime,
    *,
    run_id: str,
    model_sha256: str,
    index_sha256: str,
    policy_sha256: str | None,
) -> dict[str, Any]:
    """What an approver signs to approve or reject (``action``) a run's exact pair."""
    return statement(
        action,
        by,
        at,
        run_id=run_id,
        model_sha256=model_sha256,
        index_sha256=index_sha256,
        policy_sha256=policy_sha256,
    )


def approval_statement(approval: Any) -> dict[str, Any]:
    """The statement a recorded approval or rejection (a ledger row or record) was signed as."""
    return decision_statement(
        "approve" if approval.decision == "approved" else "reject",
        approval.decided_by,
        approval.decided_at,
        run_id=approval.run_id,
        model_sha256=approval.model_sha256,
        index_sha256=approval.index_sha256,
        policy_sha256=approval.policy_sha256,
    )


def rollback_statement(
    by: str,
    at: datetime,
    *,
    alias: str,
    version: int,
    model_sha256: str,
    index_sha256: str,
    policy_sha256: str,
) -> dict[str, Any]:
    """What an approver signs to move ``alias`` back (to ``version``, a new one) to a pair."""
    return statement(
        "rollback",
        by,
        at,
        alias=alias,
        version=version,
        model_sha256=model_sha256,
        index_sha256=index_sha256,
        policy_sha256=policy_sha256,
    )


def purge_statement(by: str, at: datetime, *, batch_id: str, policy_sha256: str) -> dict[str, Any]:
    """What an approver signs to purge a blocked batch's rows."""
    return statement("purge", by, at, batch_id=batch_id, policy_sha256=policy_sha256)


def policy_statement(
    by: str,
    at: datetime,
    *,
    policy_sha256: str,
    approves_sha256: str,
    previous_sha256: str | None,
) -> dict[str, Any]:
    """What an approver of ``policy_sha256`` signs to put policy ``approves_sha256`` in force
    in place of ``previous_sha256``."""
    return statement(
        "approve-policy",
        by,
        at,
        policy_sha256=policy_sha256,
        approves_sha256=approves_sha256,
        previous_sha256=previous_sha256,
    )
