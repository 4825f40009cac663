"""The one recipe that wraps data keys (and transport keys) under the master key (AES-256-GCM).

A wrapped key is `01 || master-key id (8) || nonce (12) || ciphertext+tag (48)`, 69 bytes. The associated
data binds the recipe, the master-key id, the user id and the version, so a wrapped key copied to another
user or version, or wrapped under another master key, fails to open. The master key is known by two
HMAC-derived values that are safe to store beside the keys: its id (in every wrapped key) and its check
value (in the store's metadata, so the service can refuse a master key that does not match the store).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keyservice.wire.errors import KeyUnwrapError, StartupRefused
from pulseseal.secretfiles import SecretFileError, read_secret

KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_BYTES = 8
FORMAT = b"\x01"
WRAPPED_BYTES = 1 + KEY_ID_BYTES + NONCE_BYTES + KEY_BYTES + 16
_AD_PREFIX = b"pulseseal/data-key/v1\x00"
# Transport keys (docs/envelope.md, "Transport envelope") are wrapped by the same recipe under their own
# label, so a wrapped transport key can never be taken for a data key or the other way round.
_TRANSPORT_AD_PREFIX = b"pulseseal/transport-key/v1\x00"


def new_data_key(rng: Callable[[int], bytes] = os.urandom) -> bytes:
    """32 random bytes for a new data key."""
    material = rng(KEY_BYTES)
    if len(material) != KEY_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    return material


class MasterKey:
    """The master key, held as an AEAD object; its bytes are not an attribute and never printed.

    Args:
        material: Exactly 32 bytes.

    Raises:
        StartupRefused: `material` is not 32 bytes.
    """

    __slots__ = ("_aead", "check_value", "key_id")

    def __init__(self, material: bytes) -> None:
        if len(material) != KEY_BYTES:
            raise StartupRefused(f"the master key must be {KEY_BYTES} bytes (base64 of 32 random bytes)")
        self._aead = AESGCM(material)
        self.key_id = hmac.digest(material, b"pulseseal/master-key-id/v1", hashlib.sha256)[:KEY_ID_BYTES]
        self.check_value = hmac.digest(material, b"pulseseal/master-key-check/v1", hashlib.sha256).hex()

    @classmethod
    def from_base64(cls, text: str, *, source: str = "the master key") -> MasterKey:
        """Decode standard base64 (surrounding whitespace ignored).

        Raises:
            StartupRefused: not base64 of 32 bytes; the message names `source`, never the text.
        """
        try:
            material = base64.b64decode(text.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise StartupRefused(f"{source} is not standard base64 of 32 bytes") from None
        if len(material) != KEY_BYTES:
            raise StartupRefused(f"{source} must decode to {KEY_BYTES} bytes, not {len(material)}")
        return cls(material)

    @classmethod
    def from_file(cls, path: Path) -> MasterKey:
        """Read a base64 master-key file.

        Raises:
            StartupRefused: the file is missing, unreadable, accessible by group or others, or not base64
                of 32 bytes.
        """
        try:
            text = read_secret(path).decode("ascii")
        except SecretFileError as exc:
            raise StartupRefused(str(exc)) from None
        except FileNotFoundError:
            raise StartupRefused(
                f"no master key: {path} does not exist; set PULSESEAL_MASTER_KEY_FILE or "
                "PULSESEAL_MASTER_KEY (`pulseseal services up` creates a dev key)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StartupRefused(f"cannot read master key file {path}: {type(exc).__name__}") from None
        return cls.from_base64(text, source=f"master key file {path}")

    @property
    def key_id_hex(self) -> str:
        """The master-key id as 16 hex digits (safe to log)."""
        return self.key_id.hex()

    def wrap(self, user_id: str, version: int, material: bytes, *, nonce: bytes | None = None) -> bytes:
        """Wrap one data key for `user_id` at `version`."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        sealed = self._aead.encrypt(nonce, material, self._associated_data(user_id, version))
        return FORMAT + self.key_id + nonce + sealed

    def unwrap(self, user_id: str, version: int, wrapped: bytes) -> bytes:
        """Open a wrapped data key.

        Raises:
            KeyUnwrapError: wrong format, another master key, another user or version, or tampered.
        """
        if len(wrapped) != WRAPPED_BYTES or wrapped[:1] != FORMAT or wrapped[1:9] != self.key_id:
            raise KeyUnwrapError()
        try:
            return self._aead.decrypt(wrapped[9:21], wrapped[21:], self._associated_data(user_id, version))
        except InvalidTag:
            raise KeyUnwrapError() from None

    def wrap_transport_key(self, key_id: str, material: bytes, *, nonce: bytes | None = None) -> bytes:
        """Wrap the private parts of one transport key (any length; 96 bytes in practice)."""
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        sealed = self._aead.encrypt(nonce, material, _TRANSPORT_AD_PREFIX + self.key_id + key_id.encode())
        return FORMAT + self.key_id + nonce + sealed

    def unwrap_transport_key(self, key_id: str, wrapped: bytes) -> bytes:
        """Open a wrapped transport key.

        Raises:
            KeyUnwrapError: wrong format, another master key, another key id, or tampered.
        """
        if len(wrapped) < 1 + KEY_ID_BYTES + NONCE_BYTES + 16 or wrapped[:1] != FORMAT:
            raise KeyUnwrapError()
        if wrapped[1:9] != self.key_id:
            raise KeyUnwrapError()
        try:
            return self._aead.decrypt(
                wrapped[9:21], wrapped[21:], _TRANSPORT_AD_PREFIX + self.key_id + key_id.encode()
            )
        except InvalidTag:
            raise KeyUnwrapError() from None

    def owns(self, wrapped: bytes) -> bool:
        """True when `wrapped` names this master key's id (says nothing about integrity)."""
        return wrapped[1:9] == self.key_id

    def _associated_data(self, user_id: str, version: int) -> bytes:
        # User ids cannot contain NUL (docs/contract.md §3), so the NUL-separated fields are unambiguous.
        return b"%s%s\x00%s\x00%d" % (_AD_PREFIX, self.key_id, user_id.encode(), version)

    def __repr__(self) -> str:
        return f"MasterKey(key_id={self.key_id_hex})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("MasterKey cannot be pickled")

    def __copy__(self) -> NoReturn:
        raise TypeError("MasterKey cannot be copied")

    def __deepcopy__(self, memo: dict[int, Any]) -> NoReturn:
        raise TypeError("MasterKey cannot be copied")
