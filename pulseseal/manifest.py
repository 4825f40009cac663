"""Signed batch manifests (docs/replay.md): the one format the encryptor writes and replay and verify check.

Every flush of an encryptor writes one manifest document to `seal_manifests`: for each user of the batch
the `_id`, stored `occurred_at` (ms) and SHA-256 of every sealed document (`document_hash`), a hash of
that user's part (`user_root`), a hash over all users' parts (`root`), the chain position (`chain`,
`seq`, `prev_id`, `prev` = the previous manifest's `manifest_hash`) and an Ed25519 signature of the
header by the encryptor's signing key. A replay of one user hashes only that user's part and the other
users' 32-byte roots; nothing else of the batch.

The document hash covers every field of a sealed document as MongoDB stores it (dates at millisecond
resolution), so a changed byte anywhere — ciphertext, `sealed_at`, an added field — changes it.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from pulseseal.envelope import to_millis

MANIFEST_COLLECTION = "seal_manifests"
FORMAT_VERSION = 1
HASH_BYTES = 32
GENESIS = bytes(HASH_BYTES)  # `prev` of a chain's first manifest when no earlier manifest exists

_HEADER_LABEL = b"pulseseal/manifest-v1\x00"
_USER_LABEL = b"pulseseal/manifest-user\x00"
_ROOT_LABEL = b"pulseseal/manifest-root\x00"
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


class ManifestInvalid(Exception):
    """A manifest is malformed, its signature does not verify, or its hashes do not match its content."""


# --- hashing ---------------------------------------------------------------------------------------


def _value(value: Any) -> bytes:
    # Type-tagged and length-prefixed, so two different documents can never encode to the same bytes.
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return b"s" + _U32.pack(len(data)) + data
    if isinstance(value, bool):
        return b"b\x01" if value else b"b\x00"
    if isinstance(value, int):
        if -(2**63) <= value < 2**63:
            return b"i" + _I64.pack(value)
        text = str(value).encode()
        return b"I" + _U32.pack(len(text)) + text
    if isinstance(value, bytes):
        return b"y" + _U32.pack(len(value)) + value
    if isinstance(value, datetime):
        return b"d" + _I64.pack(to_millis(value))
    if value is None:
        return b"n"
    if isinstance(value, float):
        return b"f" + _F64.pack(value)
    # Anything else (a sub-document, an array) cannot be in a genuine sealed document; it still hashes,
    # deterministically, so the document is reported as altered rather than crashing the check.
    text = repr(value).encode("utf-8", "backslashreplace")
    return b"x" + _U32.pack(len(text)) + text


def document_hash(document: Mapping[str, Any]) -> bytes:
    """SHA-256 of a sealed document as stored: every field, by name, dates floored to milliseconds."""
    parts = []
    for name in sorted(document):
        key = name.encode("utf-8", "surrogatepass")
        parts.append(_U16.pack(len(key)) + key + _value(document[name]))
    return hashlib.sha256(b"".join(parts)).digest()


@dataclass(frozen=True, slots=True)
class Listing:
    """One sealed document as a manifest lists it."""

    doc_id: str
    occurred_ms: int
    digest: bytes


def user_root(user_id: str, listings: Sequence[Listing]) -> bytes:
    """The hash of one user's part of a manifest: every listing, in `_id` order.

    Raises:
        ManifestInvalid: a digest is not 32 bytes.
    """
    parts = [_USER_LABEL, _string(user_id)]
    for listing in sorted(listings, key=lambda item: item.doc_id):
        if len(listing.digest) != HASH_BYTES:
            raise ManifestInvalid("a document hash is not 32 bytes")
        parts += (_string(listing.doc_id), _I64.pack(listing.occurred_ms), listing.digest)
    return hashlib.sha256(b"".join(parts)).digest()


def manifest_root(user_roots: Mapping[str, bytes]) -> bytes:
    """The hash over every user's part, in user id order."""
    parts = [_ROOT_LABEL]
    for user_id in sorted(user_roots):
        parts += (_string(user_id), user_roots[user_id])
    return hashlib.sha256(b"".join(parts)).digest()


def _string(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return _U16.pack(len(data)) + data


# --- the header: what is signed and chained --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Header:
    """A manifest's signed header."""

    manifest_id: str
    chain: str
    signer: str
    seq: int
    prev_id: str | None
    prev: bytes
    created_ms: int
    root: bytes
    docs: int

    def to_bytes(self) -> bytes:
        """The exact bytes signed: a label and canonical JSON."""
        fields = {
            "chain": self.chain,
            "created_ms": self.created_ms,
            "docs": self.docs,
            "id": self.manifest_id,
            "prev": self.prev.hex(),
            "prev_id": self.prev_id,
            "root": self.root.hex(),
            "seq": self.seq,
            "signer": self.signer,
            "v": FORMAT_VERSION,
        }
        return _HEADER_LABEL + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        """The manifest's hash: what the next manifest of the chain names as `prev`."""
        return hashlib.sha256(self.to_bytes()).digest()


def manifest_id(chain: str, seq: int) -> str:
    """The `_id` of a chain's `seq`-th manifest; sorts by chain, then sequence."""
    return f"{chain}:{seq:012d}"


def sign_header(header: Header, key: Ed25519PrivateKey) -> bytes:
    """The Ed25519 signature of a header."""
    return key.sign(header.to_bytes())


# --- reading a stored manifest back ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedManifest:
    """A manifest whose signature and hashes were checked; `listings` holds the users asked for."""

    header: Header
    digest: bytes
    listings: Mapping[str, Sequence[Listing]]

    @property
    def manifest_id(self) -> str:
        """The manifest's `_id`."""
        return self.header.manifest_id


def verify_manifest(
    document: Mapping[str, Any],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    users: Collection[str] | None = None,
) -> VerifiedManifest:
    """Check one stored manifest: its signature, its root, and the parts of `users` (every user if None).

    Raises:
        ManifestInvalid: malformed, signed by no known key, a bad signature, or a hash that does not match.
    """
    try:
        header = read_header(document)
        signature = bytes(document["sig"])
        entries = document["users"]
        if not isinstance(entries, list):
            raise TypeError
        roots: dict[str, bytes] = {}
        listings: dict[str, list[Listing]] = {}
        for entry in entries:
            user_id, root = str(entry["u"]), bytes(entry["r"])
            if user_id in roots or len(root) != HASH_BYTES:
                raise ManifestInvalid("a user is listed twice, or a user root is not 32 bytes")
            roots[user_id] = root
            if users is None or user_id in users:
                listings[user_id] = _listings(entry)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ManifestInvalid("malformed manifest") from None
    _check_signature(header, signature, public_keys)
    if manifest_root(roots) != header.root:
        raise ManifestInvalid("root does not match the users' parts")
    if sum(len(found) for found in listings.values()) > header.docs:
        raise ManifestInvalid("lists more documents than its header counts")
    for user_id, found in listings.items():
        if user_root(user_id, found) != roots[user_id]:
            raise ManifestInvalid("a user's part does not match its root")
    if users is None and sum(len(found) for found in listings.values()) != header.docs:
        raise ManifestInvalid("lists another number of documents than its header counts")
    return VerifiedManifest(header, header.digest(), listings)


def verify_header(document: Mapping[str, Any], public_keys: Mapping[str, Ed25519PublicKey]) -> Header:
    """A stored manifest's header, its signature checked (its listings not read: chain walks need no more).

    Raises:
        ManifestInvalid: malformed, signed by no known key, or a bad signature.
    """
    try:
        header = read_header(document)
        signature = bytes(document["sig"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ManifestInvalid("malformed manifest") from None
    _check_signature(header, signature, public_keys)
    return header


def _check_signature(header: Header, signature: bytes, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
    key = public_keys.get(header.signer)
    if key is None:
        raise ManifestInvalid(f"signed by {header.signer!r}, whose public key is not known")
    try:
        key.verify(signature, header.to_bytes())
    except InvalidSignature:
        raise ManifestInvalid("signature does not verify") from None


def read_header(document: Mapping[str, Any]) -> Header:
    """The header of a stored manifest (its signature not checked).

    Raises:
        KeyError, TypeError, ValueError: a field is missing or of the wrong type or size.
    """
    prev_id = document["prev_id"]
    header = Header(
        manifest_id=str(document["_id"]),
        chain=str(document["chain"]),
        signer=str(document["signer"]),
        seq=_int(document["seq"]),
        prev_id=None if prev_id is None else str(prev_id),
        prev=bytes(document["prev"]),
        created_ms=to_millis(document["created_at"]),
        root=bytes(document["root"]),
        docs=_int(document["docs"]),
    )
    if len(header.prev) != HASH_BYTES or len(header.root) != HASH_BYTES or header.seq < 1:
        raise ValueError("bad header")
    return header


def _int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an int")
    return value


def _listings(entry: Mapping[str, Any]) -> list[Listing]:
    ids, times, digests = entry["ids"], entry["t"], bytes(entry["h"])
    if not isinstance(ids, list) or not isinstance(times, list):
        raise TypeError("ids and t must be arrays")
    if len(ids) != len(times) or len(digests) != HASH_BYTES * len(ids):
        raise ValueError("ids, times and hashes differ in number")
    return [
        Listing(str(doc_id), _int(at), digests[i * HASH_BYTES : (i + 1) * HASH_BYTES])
        for i, (doc_id, at) in enumerate(zip(ids, times, strict=True))
    ]


# --- the public keys replay knows ------------------------------------------------------------------


def parse_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """Parse a manifest keys file: `{"keys": {"<signer>": "<Ed25519 public key PEM>", ...}}`.

    Raises:
        ValueError: not that shape, or a key is not an Ed25519 public key.
    """
    try:
        listed = json.loads(text)["keys"]
    except (ValueError, KeyError, TypeError):
        raise ValueError('not a JSON object with a "keys" object') from None
    if not isinstance(listed, dict):
        raise ValueError('"keys" is not an object')
    keys = {}
    for signer, pem in listed.items():
        try:
            key = load_pem_public_key(str(pem).encode())
        except ValueError:
            raise ValueError(f"the key of {signer!r} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the key of {signer!r} is not an Ed25519 public key")
        keys[str(signer)] = key
    return keys
