"""Erasure receipts: signed by the key service's key, verifiable with its public key, tamper-evident."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keyservice.receipts import ReceiptInvalid, sign_receipt, signed_bytes, verify_receipt

KEY = Ed25519PrivateKey.generate()


def test_sign_and_verify() -> None:
    receipt = sign_receipt(KEY, "alice", [2, 1], "2026-01-02T03:04:05.000Z")
    document = receipt.to_json()
    assert document["versions_destroyed"] == [1, 2]
    assert verify_receipt(document, KEY.public_key()) == receipt
    # The documented signed bytes, so anyone can verify without this library.
    KEY.public_key().verify(
        base64.b64decode(document["signature"]), signed_bytes("alice", [1, 2], document["destroyed_at"])
    )


@pytest.mark.parametrize(
    "change",
    [
        {"user_id": "bob"},
        {"versions_destroyed": [1]},
        {"destroyed_at": "2030-01-01T00:00:00.000Z"},
        {"signature": "AAAA"},
        {"signature": "not base64!"},
        {"versions_destroyed": ["1", "2"]},
        {"user_id": None},
    ],
)
def test_any_change_fails(change: dict[str, object]) -> None:
    document = {**sign_receipt(KEY, "alice", [1, 2], "2026-01-02T03:04:05.000Z").to_json(), **change}
    with pytest.raises(ReceiptInvalid):
        verify_receipt(document, KEY.public_key())


def test_another_key_fails() -> None:
    document = sign_receipt(KEY, "alice", [1], "2026-01-02T03:04:05.000Z").to_json()
    with pytest.raises(ReceiptInvalid):
        verify_receipt(document, Ed25519PrivateKey.generate().public_key())
