"""The sealed envelope: the one recipe that seals events and opens sealed documents (docs/contract.md §5).

`DataKey` is the handle a data key lives in: key material is not in its `repr`, the handle cannot be
pickled or copied, and it knows when the TTL it was granted with ends. `seal` and `open_sealed` are the
only code that use a data key. The byte layout is in docs/envelope.md.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from schemas import HealthEvent, canonical_json, parse_event

KEY_BYTES = 32
# The highest key version anything issues, accepts or opens: the key service's API caps versions at the
# int32 range (what every JSON and OpenAPI reader holds exactly); the envelope's u32 slot holds them all.
MAX_KEY_VERSION = 2**31 - 1


class InvalidKeyMaterial(ValueError):
    """The bytes given for a data key are not a 32-byte key (the message never includes them)."""


class DataKey:
    """One version of one user's data key, held for at most its granted TTL.

    Args:
        user_id: The user the key belongs to.
        version: The key version (1, 2, ... as rotations add them), at most `MAX_KEY_VERSION`.
        material: Exactly 32 bytes of key material.
        expires_at: `clock()` value after which the key must no longer be used; `None` for no expiry
            (tests and the key service's own process).
        clock: Monotonic clock used for expiry; injectable for tests.

    Raises:
        InvalidKeyMaterial: `material` is not 32 bytes.
        ValueError: `version` is not an int from 1 to `MAX_KEY_VERSION`.
    """

    __slots__ = ("_aesgcm", "_clock", "_expires_at", "_user_id", "_version")

    def __init__(
        self,
        user_id: str,
        version: int,
        material: bytes,
        *,
        expires_at: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if len(material) != KEY_BYTES:
            raise InvalidKeyMaterial(f"a data key must be {KEY_BYTES} bytes")
        # Checked here, not at seal time: a version outside the range could never be asked for again.
        if not _is_int(version) or not 1 <= version <= MAX_KEY_VERSION:
            raise ValueError(f"a key version must be an int from 1 to {MAX_KEY_VERSION}")
        self._user_id = user_id
        self._version = version
        # Only the AEAD object is kept: building it once per key, not per event, is what lets a
        # micro-batch seal hundreds of thousands of events a second.
        self._aesgcm = AESGCM(material)
        self._expires_at = expires_at
        self._clock = clock

    @classmethod
    def from_base64(
        cls,
        user_id: str,
        version: int,
        encoded: str,
        *,
        ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> DataKey:
        """Build a handle from standard base64 (as the key service sends keys), expiring after `ttl_s`.

        Raises:
            InvalidKeyMaterial: not valid base64 of 32 bytes.
        """
        try:
            material = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidKeyMaterial("a data key must be standard base64") from None
        expires_at = None if ttl_s is None else clock() + ttl_s
        return cls(user_id, version, material, expires_at=expires_at, clock=clock)

    @property
    def user_id(self) -> str:
        """The user the key belongs to (read-only: a handle cannot be relabelled)."""
        return self._user_id

    @property
    def version(self) -> int:
        """The key version (read-only)."""
        return self._version

    def expired(self) -> bool:
        """True once the TTL the key was granted with has passed."""
        # Written as `not <` so that a NaN deadline (a bad TTL) fails closed: expired, not eternal.
        return self._expires_at is not None and not self._clock() < self._expires_at

    def _aead(self) -> AESGCM:
        # Private on purpose: only this module's seal and open use the key.
        return self._aesgcm

    def __repr__(self) -> str:
        return f"DataKey(user_id={self.user_id!r}, version={self.version})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("DataKey cannot be pickled: key material stays in this process")

    def __copy__(self) -> NoReturn:
        raise TypeError("DataKey cannot be copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError("DataKey cannot be copied")


# --- the envelope ----------------------------------------------------------------------------------

ENVELOPE_VERSION = 1
ALG = "AES-256-GCM"
NONCE_BYTES = 12
DOCUMENT_FIELDS = (
    "_id",
    "user_id",
    "occurred_at",
    "key_version",
    "alg",
    "v",
    "nonce",
    "ciphertext",
    "sealed_at",
)

# Domain separation: these bytes start every v1 associated data, so a ciphertext made for anything else
# (a wrapped key, say) can never be mistaken for a sealed event.
_AD_LABEL = b"pulseseal/sealed-event\x00"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Precompiled once: `seal` builds associated data for every event, and format-string parsing was a
# measurable share of it (docs/benchmarks.md, scenario 1).
_AD_HEAD = struct.Struct(">BH")
_AD_LEN = struct.Struct(">H")
_AD_TAIL = struct.Struct(">qI")
_AD_PREFIX_V1 = _AD_LABEL + struct.pack(">B", ENVELOPE_VERSION)
# What to take off a time's microseconds to floor it to the millisecond, by remainder: subtracting a
# ready timedelta is a third of the cost of building the floored date from milliseconds.
_SUB_MILLISECOND = tuple(timedelta(microseconds=n) for n in range(1000))


class IntegrityError(Exception):
    """A sealed document failed to open. Deliberately says nothing about which check failed."""

    def __init__(self) -> None:
        super().__init__("sealed document failed to open")


class KeyExpired(Exception):
    """A data key was used after the TTL it was granted with."""


def to_millis(moment: datetime) -> int:
    """Milliseconds since the Unix epoch, floored: the resolution of a BSON date.

    A naive datetime is taken as UTC (that is how PyMongo returns dates by default).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    # Same value as `(moment - _EPOCH) // _MS`, without the timedelta division. Exact for negative
    # instants too: a timedelta keeps `seconds` and `microseconds` non-negative, so flooring the
    # microseconds alone floors the whole.
    delta = moment - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def from_millis(millis: int) -> datetime:
    """The UTC datetime `millis` milliseconds after the Unix epoch."""
    return _EPOCH + millis * _MS


def associated_data(*, v: int, event_id: str, user_id: str, occurred_at_ms: int, key_version: int) -> bytes:
    """The v1 associated data that binds a document's clear fields to its ciphertext (docs/envelope.md).

    label ‖ u8 v ‖ u16 len ‖ _id ‖ u16 len ‖ user_id ‖ i64 occurred_at (ms) ‖ u32 key_version,
    integers big-endian, strings UTF-8.

    Raises:
        ValueError: a field does not fit its slot.
    """
    id_bytes = event_id.encode()
    user_bytes = user_id.encode()
    try:
        return b"".join(
            (
                _AD_LABEL,
                _AD_HEAD.pack(v, len(id_bytes)),
                id_bytes,
                _AD_LEN.pack(len(user_bytes)),
                user_bytes,
                _AD_TAIL.pack(occurred_at_ms, key_version),
            )
        )
    except struct.error:
        # struct.error is not a ValueError; callers (and open_sealed) expect the documented one.
        raise ValueError("a field does not fit its slot in the associated data") from None


def seal(event: HealthEvent, key: DataKey, *, now: datetime | None = None) -> dict[str, Any]:
    """Seal one event into the MongoDB document of contract §5, under a fresh random nonce.

    Args:
        event: A validated event; its canonical JSON is the plaintext.
        key: The current data key of `event.user_id`.
        now: The `sealed_at` time (default: the clock).

    Raises:
        ValueError: the key belongs to another user.
        KeyExpired: the key's TTL has passed.
    """
    return _seal_all((event,), {event.user_id: key}, os.urandom(NONCE_BYTES), _sealed_at(now))[0]


def _seal_with_nonce(
    event: HealthEvent, key: DataKey, nonce: bytes, *, now: datetime | None = None
) -> dict[str, Any]:
    """`seal` with a caller-chosen nonce: FOR TEST VECTORS ONLY.

    A nonce used twice under one key breaks AES-GCM (it reveals the XOR of the plaintexts and lets the
    authentication key be recovered), so no production path may choose one: this is private, and the
    public `seal` takes no nonce at all.

    Raises:
        ValueError: the key belongs to another user, or the nonce is not 12 bytes.
        KeyExpired: the key's TTL has passed.
    """
    if len(nonce) != NONCE_BYTES:
        raise ValueError("a nonce must be 12 bytes")
    return _seal_all((event,), {event.user_id: key}, nonce, _sealed_at(now))[0]


def seal_many(
    events: Sequence[HealthEvent],
    keys: Mapping[str, DataKey],
    *,
    now: datetime | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> list[dict[str, Any]]:
    """Seal a micro-batch: `seal` for every event, with one `sealed_at` and one draw of randomness.

    The documents are exactly those `seal` makes (same fields, same bytes for the same nonces); the batch
    only shares what `seal` would compute per event: the `sealed_at` time (the batch is sealed at one
    instant) and the call for randomness (`12 * len(events)` bytes at once, cut into distinct nonces).

    Args:
        events: Validated events.
        keys: The current data key of every user in `events` (more users may be present).
        now: The `sealed_at` time of the whole batch (default: the clock, read once).
        random_bytes: The randomness source for nonces (tests inject a deterministic one).

    Raises:
        ValueError: an event's user has no key in `keys`, a key belongs to another user, or
            `random_bytes` gave the wrong number of bytes.
        KeyExpired: a key's TTL has passed (checked for every event, as `seal` does).
    """
    nonces = random_bytes(NONCE_BYTES * len(events))
    if len(nonces) != NONCE_BYTES * len(events):
        raise ValueError("the randomness source gave the wrong number of bytes")
    return _seal_all(events, keys, nonces, _sealed_at(now))


def _sealed_at(now: datetime | None) -> datetime:
    # BSON dates hold milliseconds: floor here so the returned document is what MongoDB will hold.
    return _floored(datetime.now(UTC)) if now is None else _floored_cached(now)


def _floored(moment: datetime) -> datetime:
    return from_millis(to_millis(moment))


# The encryptor calls `seal` per event with the batch's one `now`: remembering the last conversion saves
# a tenth of the per-event cost (docs/benchmarks.md, scenario 1). Keyed by value, so it is always exact.
_floored_cached = functools.lru_cache(maxsize=4)(_floored)


def _seal_all(
    events: Sequence[HealthEvent], keys: Mapping[str, DataKey], nonces: bytes, sealed_at: datetime
) -> list[dict[str, Any]]:
    # The one sealing path, behind `seal` and `seal_many`. `nonces` holds 12 bytes per event. Written
    # as one loop with `to_millis` and `associated_data` inlined and the globals it uses bound to
    # locals: per-event Python overhead is most of what seal costs beyond JSON and AES (see
    # docs/benchmarks.md, scenario 1). The layout is `associated_data`'s, checked against it by the
    # frozen vectors.
    epoch, sub_millisecond, prefix, u16, tail = (
        _EPOCH,
        _SUB_MILLISECOND,
        _AD_PREFIX_V1,
        _AD_LEN.pack,
        _AD_TAIL.pack,
    )
    serialise, key_of, alg, v, size = canonical_json, keys.get, ALG, ENVELOPE_VERSION, NONCE_BYTES
    documents = []
    for offset, event in zip(range(0, len(nonces), size), events, strict=True):
        user_id = event.user_id
        key = key_of(user_id)
        if key is None:
            raise ValueError("no data key for an event's user")
        if key._user_id != user_id:
            raise ValueError("the data key belongs to another user")
        if key.expired():
            raise KeyExpired("data key used after its TTL; fetch it again")
        event_id = event.event_id
        version = key._version
        # A validated event's time always has an offset (schemas/events.py), so no naive case here.
        delta = event.occurred_at - epoch
        micros = delta.microseconds
        occurred_ms = delta.days * 86_400_000 + delta.seconds * 1000 + micros // 1000
        id_bytes = event_id.encode()
        user_bytes = user_id.encode()
        try:
            ad = b"".join(
                (
                    prefix,
                    u16(len(id_bytes)),
                    id_bytes,
                    u16(len(user_bytes)),
                    user_bytes,
                    tail(occurred_ms, version),
                )
            )
        except struct.error:
            raise ValueError("a field does not fit its slot in the associated data") from None
        nonce = nonces[offset : offset + size]
        documents.append(
            {
                "_id": event_id,
                "user_id": user_id,
                "occurred_at": epoch + (delta - sub_millisecond[micros % 1000]),
                "key_version": version,
                "alg": alg,
                "v": v,
                "nonce": nonce,
                "ciphertext": key._aesgcm.encrypt(nonce, serialise(event), ad),
                "sealed_at": sealed_at,
            }
        )
    return documents


def open_sealed(document: Mapping[str, Any], key: DataKey) -> HealthEvent:
    """Open a sealed document with its user's data key of the document's `key_version`.

    Raises:
        IntegrityError: for every failure alike: wrong key, changed clear field, flipped bit, moved
            ciphertext, unknown envelope version, malformed document.
        KeyExpired: the key's TTL has passed.
    """
    if key.expired():
        raise KeyExpired("data key used after its TTL; fetch it again")
    try:
        event_id = document["_id"]
        user_id = document["user_id"]
        version = document["key_version"]
        occurred_at = document["occurred_at"]
        if not isinstance(occurred_at, datetime):
            raise IntegrityError
        occurred_ms = to_millis(occurred_at)
        nonce = _binary(document["nonce"])
        ciphertext = _binary(document["ciphertext"])
        envelope_version = document["v"]
        if (
            # `True == 1` and `1.0 == 1` in Python, but a BSON bool or double is not our v. Int subclasses
            # are ints: PyMongo returns an int64 as `bson.Int64` (key versions from 2**31 are stored so).
            not _is_int(envelope_version)
            or envelope_version != ENVELOPE_VERSION
            or document["alg"] != ALG
            or not isinstance(event_id, str)
            or not isinstance(user_id, str)
            or not _is_int(version)
            or key.user_id != user_id
            or key.version != version
            or len(nonce) != NONCE_BYTES
        ):
            raise IntegrityError
        ad = associated_data(
            v=ENVELOPE_VERSION,
            event_id=event_id,
            user_id=user_id,
            occurred_at_ms=occurred_ms,
            key_version=version,
        )
        plaintext = key._aead().decrypt(nonce, ciphertext, ad)
        event = parse_event(plaintext)
        # The AD already binds these; checking them again costs nothing and guards the sealing side.
        same_ms = to_millis(event.occurred_at) == occurred_ms
        if event.event_id != event_id or event.user_id != user_id or not same_ms:
            raise IntegrityError
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError, InvalidTag):
        raise IntegrityError from None
    return event


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _binary(value: object) -> bytes:
    # Only real binary (bytes, bson.Binary, bytearray, memoryview). `bytes(value)` alone would turn an
    # int into that many zero bytes (a huge allocation for a crafted document) and a list into bytes.
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("not binary")
    return bytes(value)
