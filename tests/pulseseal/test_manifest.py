"""The manifest format (pulseseal/manifest.py): document hashes, packed parts, signatures, tamper checks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from pulseseal.manifest import (
    GENESIS,
    Header,
    Listing,
    ManifestInvalid,
    document_hash,
    manifest_id,
    manifest_root,
    pack_parts,
    sign_header,
    slow_document_hash,
    unpack_parts,
    verify_header,
    verify_manifest,
)

AT = datetime(2026, 5, 4, 8, 0, 0, 123456, tzinfo=UTC)


def sealed_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "_id": str(uuid.UUID(int=7)),
        "user_id": "alice",
        "occurred_at": AT,
        "key_version": 1,
        "alg": "AES-256-GCM",
        "v": 1,
        "nonce": b"\x01" * 12,
        "ciphertext": b"\x02" * 40,
        "sealed_at": AT + timedelta(seconds=1),
    }
    doc.update(changes)
    return doc


def test_the_fast_hash_is_the_general_rule() -> None:
    doc = sealed_doc()
    assert document_hash(doc) == slow_document_hash(doc)
    assert len(document_hash(doc)) == 16


@given(
    st.text(max_size=40),
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.binary(max_size=64),
    st.datetimes(timezones=st.just(UTC)),
)
def test_the_fast_hash_agrees_for_any_values(
    doc_id: str, user: str, version: int, data: bytes, at: datetime
) -> None:
    doc = sealed_doc(_id=doc_id, user_id=user, key_version=version, ciphertext=data, occurred_at=at)
    assert document_hash(doc) == slow_document_hash(doc)


@pytest.mark.parametrize(
    "change",
    [
        {"ciphertext": b"\x02" * 39 + b"\x03"},
        {"sealed_at": AT + timedelta(seconds=2)},
        {"key_version": 2},
        {"v": True},  # a bool is not the int 1
        {"alg": "AES-128-GCM"},
        {"extra": "field"},
    ],
)
def test_any_change_changes_the_hash(change: dict[str, Any]) -> None:
    assert document_hash(sealed_doc(**change)) != document_hash(sealed_doc())


def test_the_hash_is_of_the_stored_millisecond() -> None:
    # MongoDB keeps milliseconds: the document the encryptor wrote and the one read back hash alike.
    assert document_hash(sealed_doc(occurred_at=AT)) == document_hash(
        sealed_doc(occurred_at=AT.replace(microsecond=123000))
    )


def listings(user: str, ids: list[str]) -> list[Listing]:
    return [Listing(i, n * 1000, document_hash(sealed_doc(_id=i, user_id=user))) for n, i in enumerate(ids)]


def test_parts_round_trip_uuids_and_other_ids() -> None:
    users = {
        "alice": listings("alice", [str(uuid.uuid4()), "not-a-uuid", str(uuid.uuid4()).upper()]),
        "bob:1@x": listings("bob:1@x", [str(uuid.uuid4())]),
    }
    order, parts, roots = pack_parts(users)
    assert order == ["alice", "bob:1@x"]
    got_roots, got = unpack_parts(order, parts, None)
    assert got_roots == roots
    assert got == users
    _, only = unpack_parts(order, parts, {"bob:1@x"})
    assert only == {"bob:1@x": users["bob:1@x"]}


def manifest(
    key: Ed25519PrivateKey, listed: dict[str, list[Listing]], changes: dict[str, Any] | None = None
) -> dict[str, Any]:
    order, parts, roots = pack_parts(listed)
    header = Header(
        manifest_id=manifest_id("encryptor-x", 1),
        chain="encryptor-x",
        signer="encryptor",
        seq=1,
        prev_id=None,
        prev=GENESIS,
        created_ms=1_700_000_000_000,
        root=manifest_root(roots),
        docs=sum(len(found) for found in listed.values()),
    )
    document = {
        "_id": header.manifest_id,
        "chain": header.chain,
        "signer": header.signer,
        "seq": header.seq,
        "prev_id": None,
        "prev": GENESIS,
        "created_at": datetime.fromtimestamp(1_700_000_000, UTC),
        "root": header.root,
        "docs": header.docs,
        "users": order,
        "parts": parts,
        "sig": sign_header(header, key),
    }
    document.update(changes or {})
    return document


def test_a_manifest_verifies_with_its_key_and_only_with_it() -> None:
    key = Ed25519PrivateKey.generate()
    users = {"alice": listings("alice", [str(uuid.uuid4()) for _ in range(3)])}
    document = manifest(key, users)
    verified = verify_manifest(document, {"encryptor": key.public_key()})
    assert verified.listings == users
    assert verify_header(document, {"encryptor": key.public_key()}).digest() == verified.digest
    with pytest.raises(ManifestInvalid, match="signature does not verify"):
        verify_manifest(document, {"encryptor": Ed25519PrivateKey.generate().public_key()})
    with pytest.raises(ManifestInvalid, match="not known"):
        verify_manifest(document, {})


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"docs": 4}, "signature does not verify"),
        ({"seq": 2}, "signature does not verify"),
        ({"prev": b"\x01" * 32}, "signature does not verify"),
        ({"users": ["mallory"]}, "root does not match"),
        ({"parts": b"\x00\x00"}, "malformed manifest"),
        ({"users": "alice"}, "malformed manifest"),
        ({"sig": None}, "malformed manifest"),
    ],
)
def test_an_edited_manifest_fails(changes: dict[str, Any], why: str) -> None:
    key = Ed25519PrivateKey.generate()
    users = {"alice": listings("alice", [str(uuid.uuid4()) for _ in range(3)])}
    document = manifest(key, users, changes)
    with pytest.raises(ManifestInvalid, match=why):
        verify_manifest(document, {"encryptor": key.public_key()})


def test_a_flipped_listing_fails_the_users_part() -> None:
    key = Ed25519PrivateKey.generate()
    document = manifest(key, {"alice": listings("alice", [str(uuid.uuid4()) for _ in range(3)])})
    parts = bytearray(document["parts"])
    parts[-1] ^= 1
    document["parts"] = bytes(parts)
    with pytest.raises(ManifestInvalid, match="a user's part does not match its root"):
        verify_manifest(document, {"encryptor": key.public_key()})
