"""The transport envelope: the one recipe that seals broker messages for the encryptors (contract §4).

Every body PulseSeal publishes to `pulseseal.events` or `pulseseal.dead` is sealed with HPKE (RFC 9180,
base mode, single shot) under the encryptors' current transport key, so the broker — its queues, its
write-ahead logs, its disk and its backups — holds ciphertext only. The suite is fixed:
KEM `MLKEM768-X25519` (hybrid post-quantum), KDF `HKDF-SHA256`, AEAD `AES-256-GCM`. The body is
`enc ‖ ciphertext` exactly as `hpke.Suite.encrypt` returns it; `info` binds the key id and the plaintext's
content type, so a body moved to a message of another key id or content type fails to open. The layout is
in docs/envelope.md ("Transport envelope").

`TransportPublicKey` and `TransportPrivateKey` are handles: no key bytes in their `repr`, no pickling or
copying. Producers only ever hold the public one. Opening raises one opaque `TransportUnopenable`: it
never says whether the key id was unknown, the ciphertext altered or the content type changed.
This is the only module that calls HPKE.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

SUITE_NAME = "MLKEM768-X25519/HKDF-SHA256/AES-256-GCM"
TRANSPORT_HEADER = "x-pulseseal-transport"
TRANSPORT_KEY_HEADER = "x-pulseseal-transport-key"
TRANSPORT_VERSION = "hpke-v1"
MLKEM768_PUBLIC_BYTES = 1184
MLKEM768_SEED_BYTES = 64
X25519_BYTES = 32
ENC_BYTES = 1120  # the hybrid KEM's encapsulation: ML-KEM-768 ciphertext (1088) + X25519 share (32)
TAG_BYTES = 16
OVERHEAD_BYTES = ENC_BYTES + TAG_BYTES
INFO_PREFIX = b"pulseseal-transport-v1\x00"
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_KEY_ID_RE = re.compile(KEY_ID_PATTERN[1:-1])

_SUITE = hpke.Suite(hpke.KEM.MLKEM768_X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class TransitError(Exception):
    """Base of every transport-envelope failure; messages never carry key bytes or message content."""


class InvalidTransportKey(TransitError):
    """Bytes given for a transport key are not a key of the suite (or the key id is malformed)."""


class TransportUnsealed(TransitError):
    """A message carries no transport envelope (its headers are missing or name another version)."""


class TransportUnopenable(TransitError):
    """A sealed message did not open. Deliberately says nothing about which check failed."""

    def __init__(self) -> None:
        super().__init__("transport-sealed message failed to open")


def check_key_id(key_id: str) -> str:
    """`key_id` when it is 1-64 characters of `A-Za-z0-9._-` (safe in a header and in `info`).

    Raises:
        InvalidTransportKey: it is not.
    """
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise InvalidTransportKey("a transport key id must be 1-64 characters of A-Za-z0-9._-")
    return key_id


def key_id_for(mlkem768: bytes, x25519_public: bytes) -> str:
    """The key id of a public key: a fingerprint, so the same key always has the same id."""
    return hashlib.sha256(b"pulseseal-transport-key-id\x00" + mlkem768 + x25519_public).hexdigest()[:24]


def info_for(key_id: str, content_type: str) -> bytes:
    """The HPKE `info`: `pulseseal-transport-v1 NUL key_id NUL content_type` (ASCII).

    Raises:
        InvalidTransportKey: the key id is malformed.
        TransportUnopenable: the content type is not ASCII (no message PulseSeal sends has one).
    """
    check_key_id(key_id)
    try:
        return INFO_PREFIX + key_id.encode("ascii") + b"\x00" + content_type.encode("ascii")
    except UnicodeEncodeError:
        raise TransportUnopenable() from None


class _Handle:
    __slots__ = ()

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be pickled: transport keys stay in this process")

    def __copy__(self) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError(f"{type(self).__name__} cannot be copied")


class TransportPublicKey(_Handle):
    """The public half of a transport key: what producers seal to.

    Build it with `from_raw` from the key service's answer (contract §6).
    """

    __slots__ = ("_key", "_mlkem768", "_x25519", "key_id")

    def __init__(self, key_id: str, mlkem768: bytes, x25519_public: bytes) -> None:
        self.key_id = check_key_id(key_id)
        if len(mlkem768) != MLKEM768_PUBLIC_BYTES or len(x25519_public) != X25519_BYTES:
            raise InvalidTransportKey(
                f"a transport public key is {MLKEM768_PUBLIC_BYTES} bytes of ML-KEM-768 and "
                f"{X25519_BYTES} bytes of X25519"
            )
        try:
            self._key = hpke.MLKEM768X25519PublicKey(
                mlkem.MLKEM768PublicKey.from_public_bytes(mlkem768),
                x25519.X25519PublicKey.from_public_bytes(x25519_public),
            )
        except ValueError:
            raise InvalidTransportKey("the transport public key bytes are not a valid key") from None
        self._mlkem768 = bytes(mlkem768)
        self._x25519 = bytes(x25519_public)

    @classmethod
    def from_raw(cls, key_id: str, mlkem768: bytes, x25519_public: bytes) -> TransportPublicKey:
        """The public key from its raw ML-KEM-768 (1184 bytes) and X25519 (32 bytes) parts.

        Raises:
            InvalidTransportKey: wrong sizes, invalid bytes or a malformed key id.
        """
        return cls(key_id, mlkem768, x25519_public)

    def public_parts(self) -> tuple[bytes, bytes]:
        """`(mlkem768, x25519)` raw public bytes, as `GET /v1/transport/key` sends them (not secret)."""
        return self._mlkem768, self._x25519

    def __repr__(self) -> str:
        return f"TransportPublicKey(key_id={self.key_id!r})"


class TransportPrivateKey(_Handle):
    """A whole transport key (private and public parts), in the key service or an encryptor.

    Args:
        key_id: The key id.
        mlkem768_seed: The 64-byte ML-KEM-768 seed (`MLKEM768PrivateKey.from_seed_bytes`).
        x25519_private: The 32-byte raw X25519 private key.

    Raises:
        InvalidTransportKey: wrong sizes or a malformed key id.
    """

    __slots__ = ("_key", "_seed", "_x25519", "key_id", "public_key")

    def __init__(self, key_id: str, mlkem768_seed: bytes, x25519_private: bytes) -> None:
        self.key_id = check_key_id(key_id)
        if len(mlkem768_seed) != MLKEM768_SEED_BYTES or len(x25519_private) != X25519_BYTES:
            raise InvalidTransportKey(
                f"a transport private key is a {MLKEM768_SEED_BYTES}-byte ML-KEM-768 seed and "
                f"{X25519_BYTES} bytes of X25519"
            )
        try:
            ml = mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem768_seed)
            xk = x25519.X25519PrivateKey.from_private_bytes(x25519_private)
        except ValueError:
            raise InvalidTransportKey("the transport private key bytes are not a valid key") from None
        self._key = hpke.MLKEM768X25519PrivateKey(ml, xk)
        self._seed = bytes(mlkem768_seed)
        self._x25519 = bytes(x25519_private)
        self.public_key = TransportPublicKey(
            key_id, ml.public_key().public_bytes_raw(), xk.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls, rng: Callable[[int], bytes] = os.urandom) -> TransportPrivateKey:
        """A new transport key from `rng` (injectable for test vectors); its id is its fingerprint."""
        seed, xpriv = rng(MLKEM768_SEED_BYTES), rng(X25519_BYTES)
        mlkem768 = mlkem.MLKEM768PrivateKey.from_seed_bytes(seed).public_key().public_bytes_raw()
        xpub = x25519.X25519PrivateKey.from_private_bytes(xpriv).public_key().public_bytes_raw()
        return cls(key_id_for(mlkem768, xpub), seed, xpriv)

    def export_private_parts(self) -> tuple[bytes, bytes]:
        """`(mlkem768_seed, x25519_private)`: only for wrapping under the master key and for
        `POST /v1/transport/keys/open`. The name is long on purpose; nothing else should call it."""
        return self._seed, self._x25519

    def _hpke_key(self) -> hpke.MLKEM768X25519PrivateKey:
        # Private on purpose: only this module's `open_message` uses it.
        return self._key

    def __repr__(self) -> str:
        return f"TransportPrivateKey(key_id={self.key_id!r})"


@dataclass(frozen=True, slots=True)
class SealedMessage:
    """A transport-sealed message: the body for the broker, the key it is sealed under, and the content
    type of the plaintext (which stays the message's content type)."""

    body: bytes
    key_id: str
    content_type: str

    @property
    def headers(self) -> dict[str, Any]:
        """The AMQP headers that mark the message as sealed and name its key."""
        return {TRANSPORT_HEADER: TRANSPORT_VERSION, TRANSPORT_KEY_HEADER: self.key_id}

    def __repr__(self) -> str:
        return f"SealedMessage(key_id={self.key_id!r}, content_type={self.content_type!r}, {len(self.body)} bytes)"


def seal(plaintext: bytes, public_key: TransportPublicKey, content_type: str) -> SealedMessage:
    """Seal a message body for the encryptors.

    Args:
        plaintext: The message body (one JSON event or an NDJSON batch).
        public_key: The current transport public key.
        content_type: The plaintext's content type (bound into `info`; stays the message's).

    Raises:
        TransportUnopenable: `content_type` is not ASCII, so no encryptor could open the message.
    """
    info = info_for(public_key.key_id, content_type)
    return SealedMessage(_SUITE.encrypt(plaintext, public_key._key, info), public_key.key_id, content_type)


def sealed_from(body: bytes, headers: Mapping[str, Any] | None, content_type: str | None) -> SealedMessage:
    """Read a delivered message as a sealed message (its headers only; the body is checked on opening).

    Raises:
        TransportUnsealed: the transport headers are missing or name another version; nothing was sealed.
        TransportUnopenable: the headers are there but malformed (the message cannot be opened).
    """
    headers = headers or {}
    version = _text(headers.get(TRANSPORT_HEADER))
    key_id = _text(headers.get(TRANSPORT_KEY_HEADER))
    if version is None and key_id is None:
        raise TransportUnsealed("message has no transport envelope")
    if version != TRANSPORT_VERSION or key_id is None or not _KEY_ID_RE.fullmatch(key_id):
        raise TransportUnopenable()
    return SealedMessage(bytes(body), key_id, content_type or "")


def open_message(sealed: SealedMessage, private_keys: Mapping[str, TransportPrivateKey]) -> bytes:
    """Open a sealed message with whichever of `private_keys` its key id names.

    Raises:
        TransportUnopenable: the key id is not among `private_keys` (unknown or retired), the body or
            the content type was altered, or the body is too short; which one is never said.
    """
    key = private_keys.get(sealed.key_id)
    if key is None or len(sealed.body) < OVERHEAD_BYTES:
        raise TransportUnopenable()
    info = info_for(sealed.key_id, sealed.content_type)
    try:
        return _SUITE.decrypt(sealed.body, key._hpke_key(), info)
    except (InvalidTag, ValueError):
        raise TransportUnopenable() from None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    return value if isinstance(value, str) else str(value)
