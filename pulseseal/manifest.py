"""Signed batch manifests (docs/replay.md): the one format the encryptor writes and replay and verify check.

Every flush of an encryptor writes one manifest document to `seal_manifests`: `users` (the batch's user
ids, indexed) and `parts`, one binary string holding, per user in that order, the user's part: a hash of
the part (`user_root`) and the `_id`, stored `occurred_at` (ms) and SHA-256 cut to 128 bits (`document_hash`) of each of
the user's sealed documents. Then a hash over every user's root (`root`), the chain position (`chain`,
`seq`, `prev_id`, `prev` = the previous manifest's header hash) and an Ed25519 signature of the header
by the encryptor's signing key. A replay of one user hashes only that user's listings and the other
users' 32-byte roots; nothing else of the batch.

Why one binary string and not a sub-document per user: FerretDB on SQLite stores documents as JSON and
pays per node; a batch of 2000 events of 1800 users took 115 ms to insert as 1800 sub-documents and
24 ms packed (docs/replay.md).

    part    = root (32 B) ‖ u32 count ‖ count times (u16 len ‖ _id, or 0xFFFF ‖ 16-byte UUID ‖ i64 occurred_at ms ‖ SHA-256/128 (16 B))
    parts   = for each user of `users`, in order: u32 len(part) ‖ part

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
# A document's hash is SHA-256 cut to 128 bits: forging a document to match a listed hash is a second
# preimage (2^128 work), and the encryptor, not the attacker, makes the listed document (random nonce).
# Half the bytes of every listing: what FerretDB pays per manifest grows with its size.
DOC_HASH_BYTES = 16
GENESIS = bytes(HASH_BYTES)  # `prev` of a chain's first manifest when no earlier manifest exists

_HEADER_LABEL = b"pulseseal/manifest-v1\x00"
_USER_LABEL = b"pulseseal/manifest-user\x00"
_ROOT_LABEL = b"pulseseal/manifest-root\x00"
_U16 = struct.Struct(">H")
_PART_HEAD = struct.Struct(">I")
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


def _name(name: str) -> bytes:
    key = name.encode("utf-8", "surrogatepass")
    return _U16.pack(len(key)) + key


# The fields of a genuine sealed document, in name order, and the type each has: documents of exactly
# this shape take the fast path below, which builds the very bytes the general loop would (a test holds
# the two to each other) in a third of the time — it runs for every document the encryptor stores.
_SHAPE = (
    ("_id", str),
    ("alg", str),
    ("ciphertext", bytes),
    ("key_version", int),
    ("nonce", bytes),
    ("occurred_at", datetime),
    ("sealed_at", datetime),
    ("user_id", str),
    ("v", int),
)
_SHAPE_NAMES = frozenset(name for name, _ in _SHAPE)
_PREFIX = {name: _name(name) for name, _ in _SHAPE}


def _fast_hash(document: Mapping[str, Any]) -> bytes | None:
    # Unrolled on purpose: a loop over `_SHAPE` with a branch per type took three times as long.
    if len(document) != len(_SHAPE) or document.keys() != _SHAPE_NAMES:
        return None
    doc_id, alg, ciphertext = document["_id"], document["alg"], document["ciphertext"]
    version, nonce, user_id, v = (
        document["key_version"],
        document["nonce"],
        document["user_id"],
        document["v"],
    )
    occurred_at, sealed_at = document["occurred_at"], document["sealed_at"]
    if not (
        type(doc_id) is str
        and type(alg) is str
        and type(user_id) is str
        and type(ciphertext) is bytes
        and type(nonce) is bytes
        and type(version) is int
        and type(v) is int
        and type(occurred_at) is datetime
        and type(sealed_at) is datetime
        and -(2**63) <= version < 2**63
        and -(2**63) <= v < 2**63
    ):
        return None
    id_bytes = doc_id.encode("utf-8", "surrogatepass")
    alg_bytes = alg.encode("utf-8", "surrogatepass")
    user_bytes = user_id.encode("utf-8", "surrogatepass")
    data = b"".join(
        (
            _PREFIX["_id"],
            b"s",
            _U32.pack(len(id_bytes)),
            id_bytes,
            _PREFIX["alg"],
            b"s",
            _U32.pack(len(alg_bytes)),
            alg_bytes,
            _PREFIX["ciphertext"],
            b"y",
            _U32.pack(len(ciphertext)),
            ciphertext,
            _PREFIX["key_version"],
            b"i",
            _I64.pack(version),
            _PREFIX["nonce"],
            b"y",
            _U32.pack(len(nonce)),
            nonce,
            _PREFIX["occurred_at"],
            b"d",
            _I64.pack(to_millis(occurred_at)),
            _PREFIX["sealed_at"],
            b"d",
            _I64.pack(to_millis(sealed_at)),
            _PREFIX["user_id"],
            b"s",
            _U32.pack(len(user_bytes)),
            user_bytes,
            _PREFIX["v"],
            b"i",
            _I64.pack(v),
        )
    )
    return hashlib.sha256(data).digest()[:DOC_HASH_BYTES]


def document_hash(document: Mapping[str, Any]) -> bytes:
    """SHA-256 of a sealed document as stored: every field, by name, dates floored to milliseconds."""
    fast = _fast_hash(document)
    if fast is not None:
        return fast
    return slow_document_hash(document)


def slow_document_hash(document: Mapping[str, Any]) -> bytes:
    """`document_hash` by the general rule, for any document (tests compare the fast path with it)."""
    parts = []
    for name in sorted(document):
        parts.append(_name(str(name)) + _value(document[name]))
    return hashlib.sha256(b"".join(parts)).digest()[:DOC_HASH_BYTES]


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
        if len(listing.digest) != DOC_HASH_BYTES:
            raise ManifestInvalid("a document hash is not 16 bytes")
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
        roots, listings = unpack_parts(document["users"], bytes(document["parts"]), users)
    except (KeyError, TypeError, ValueError, AttributeError, struct.error):
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


def pack_parts(users: Mapping[str, Sequence[Listing]]) -> tuple[list[str], bytes, dict[str, bytes]]:
    """The `users` array, the `parts` bytes and each user's root of a manifest listing `users`."""
    order = list(users)
    chunks: list[bytes] = []
    roots: dict[str, bytes] = {}
    for user_id in order:
        listings = users[user_id]
        roots[user_id] = root = user_root(user_id, listings)
        part = [root, _U32.pack(len(listings))]
        for listing in listings:
            part += (_packed_id(listing.doc_id), _I64.pack(listing.occurred_ms), listing.digest)
        body = b"".join(part)
        chunks += (_PART_HEAD.pack(len(body)), body)
    return order, b"".join(chunks), roots


def unpack_parts(
    users: Any, parts: bytes, wanted: Collection[str] | None
) -> tuple[dict[str, bytes], dict[str, list[Listing]]]:
    """Every user's root, and the listings of the users `wanted` (every user if None).

    Raises:
        ValueError, TypeError, struct.error: the bytes are not parts of these users.
    """
    if not isinstance(users, list):
        raise TypeError("users must be an array")
    roots: dict[str, bytes] = {}
    listings: dict[str, list[Listing]] = {}
    offset = 0
    for user in users:
        user_id = str(user)
        (size,) = _PART_HEAD.unpack_from(parts, offset)
        start, offset = offset + _PART_HEAD.size, offset + _PART_HEAD.size + size
        if offset > len(parts) or size < HASH_BYTES + _U32.size or user_id in roots:
            raise ValueError("a part runs past the end, is too short, or a user is listed twice")
        roots[user_id] = parts[start : start + HASH_BYTES]
        if wanted is None or user_id in wanted:
            listings[user_id] = _read_listings(parts[start + HASH_BYTES : offset])
    if offset != len(parts):
        raise ValueError("bytes after the last part")
    return roots, listings


_UUID_MARK = 0xFFFF  # in a listing's length slot: the `_id` is a canonical UUID, stored as its 16 bytes
_UUID_PREFIX = _U16.pack(_UUID_MARK)


def _packed_id(doc_id: str) -> bytes:
    # Event ids are UUIDs (docs/contract.md §3): 16 bytes instead of 36 characters, where the text is
    # canonical (lowercase, hyphenated), so that unpacking restores the same string.
    if len(doc_id) == 36 and doc_id[8] == doc_id[13] == doc_id[18] == doc_id[23] == "-":
        digits = doc_id.replace("-", "")
        if len(digits) == 32 and digits == digits.lower():
            try:
                return _UUID_PREFIX + bytes.fromhex(digits)
            except ValueError:
                pass  # not hex: kept as text
    return _string(doc_id)


def _uuid_text(raw: bytes) -> str:
    if len(raw) != 16:
        raise ValueError("a packed UUID is not 16 bytes")
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _read_listings(part: bytes) -> list[Listing]:
    (count,) = _U32.unpack_from(part, 0)
    found: list[Listing] = []
    at = _U32.size
    for _ in range(count):
        (size,) = _U16.unpack_from(part, at)
        if size == _UUID_MARK:
            doc_id = _uuid_text(part[at + 2 : at + 18])
            at += 18
        else:
            doc_id = part[at + 2 : at + 2 + size].decode("utf-8", "surrogatepass")
            at += 2 + size
        (occurred_ms,) = _I64.unpack_from(part, at)
        digest = part[at + 8 : at + 8 + DOC_HASH_BYTES]
        if len(digest) != DOC_HASH_BYTES:
            raise ValueError("a listing runs past its part")
        found.append(Listing(doc_id, occurred_ms, digest))
        at += 8 + DOC_HASH_BYTES
    if at != len(part):
        raise ValueError("bytes after a part's last listing")
    return found


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
