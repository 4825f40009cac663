"""Erasure receipts: proof, signed with the key service's own Ed25519 key, that a user's keys were destroyed.

The signature is Ed25519 over `pulseseal-erasure-receipt/v1\\n` followed by the compact, key-sorted JSON of
`{"backups_unreadable_after", "destroyed_at", "user_id", "versions_destroyed"}` (receipts from before
`backups_unreadable_after` existed sign the other three), and travels as standard base64. Anyone with the
key service's public key can check a receipt with `verify_receipt`.

What a receipt says (contract §6, docs/keyservice.md "What erasure covers"): at `destroyed_at` the listed
key versions left the key store; when the receipt was sent, no file of the key store held them any more
and every encryptor following the shred stream dropped them within a second; from
`backups_unreadable_after` on, no backup taken by `pulseseal keys backup` yields them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from keyservice.wire.errors import KeyServiceError

_CONTEXT = b"pulseseal-erasure-receipt/v1\n"


class ReceiptInvalid(KeyServiceError):
    """A receipt is malformed or its signature does not verify."""

    default_reason = "receipt_invalid"
    title = "Erasure receipt invalid"


@dataclass(frozen=True, slots=True)
class ErasureReceipt:
    """A signed statement: these key versions of this user were destroyed at this time."""

    user_id: str
    versions_destroyed: tuple[int, ...]
    destroyed_at: str
    signature: str
    backups_unreadable_after: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The receipt as the API returns it."""
        document: dict[str, Any] = {
            "user_id": self.user_id,
            "versions_destroyed": list(self.versions_destroyed),
            "destroyed_at": self.destroyed_at,
        }
        if self.backups_unreadable_after is not None:
            document["backups_unreadable_after"] = self.backups_unreadable_after
        document["signature"] = self.signature
        return document


def signed_bytes(
    user_id: str, versions: Sequence[int], destroyed_at: str, backups_unreadable_after: str | None = None
) -> bytes:
    """The exact bytes a receipt's signature covers."""
    body: dict[str, Any] = {
        "destroyed_at": destroyed_at,
        "user_id": user_id,
        "versions_destroyed": list(versions),
    }
    if backups_unreadable_after is not None:
        body["backups_unreadable_after"] = backups_unreadable_after
    return _CONTEXT + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def sign_receipt(
    key: Ed25519PrivateKey,
    user_id: str,
    versions: Sequence[int],
    destroyed_at: str,
    *,
    backups_unreadable_after: str | None = None,
) -> ErasureReceipt:
    """Sign a receipt for destroyed versions."""
    ordered = tuple(sorted(versions))
    signature = key.sign(signed_bytes(user_id, ordered, destroyed_at, backups_unreadable_after))
    return ErasureReceipt(
        user_id, ordered, destroyed_at, base64.b64encode(signature).decode("ascii"), backups_unreadable_after
    )


def verify_receipt(document: Mapping[str, Any], public_key: Ed25519PublicKey) -> ErasureReceipt:
    """Check a receipt as returned by `DELETE /v1/users/{user_id}`.

    Raises:
        ReceiptInvalid: a field is missing or of the wrong type, or the signature does not verify.
    """
    user_id, versions = document.get("user_id"), document.get("versions_destroyed")
    destroyed_at, signature = document.get("destroyed_at"), document.get("signature")
    backups = document.get("backups_unreadable_after")
    if (
        not (backups is None or isinstance(backups, str))
        or not isinstance(user_id, str)
        or not isinstance(destroyed_at, str)
        or not isinstance(signature, str)
        or not isinstance(versions, list)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in versions)
    ):
        raise ReceiptInvalid("receipt fields missing or of the wrong type")
    try:
        raw = base64.b64decode(signature, validate=True)
        public_key.verify(raw, signed_bytes(user_id, versions, destroyed_at, backups))
    except (binascii.Error, ValueError, InvalidSignature):
        raise ReceiptInvalid("receipt signature does not verify") from None
    return ErasureReceipt(user_id, tuple(versions), destroyed_at, signature, backups)
