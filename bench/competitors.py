"""What users would seal health events with instead of PulseSeal, set up as their documentation says.

Each competitor holds one key per user, created before timing starts (the "keys already in memory" case
our seal is measured in), and encrypts the event's canonical JSON bytes, already serialised: it is given
the plaintext for free, where `seal` pays for serialising the event.

- `TinkAead`: Google Tink AEAD, an AES256_GCM keyset per user, `encrypt(plaintext, associated_data)` with
  the same associated data as ours.
- `MongoExplicit`: MongoDB explicit client-side field-level encryption (`ClientEncryption.encrypt`, the
  `AEAD_AES_256_CBC_HMAC_SHA_512-Random` algorithm), a local KMS provider and one data key per user in a
  key vault collection on the local MongoDB-compatible server; every key is read into libmongocrypt's cache
  before timing (`first_use_ms` says what a read cost), and the cache never expires during the run.
- `AwsEsdk`: the AWS Encryption SDK's `encrypt` with a caching cryptographic materials manager over a raw
  AES wrapping key per user. The SDK (v4) has the caching CMM only for master key providers, not for the
  keyrings of the Material Providers Library, so this is the `RawMasterKeyProvider` path. Encryption
  context `{"user_id": ...}` (the cache is keyed by it). Measured with the committing suite without
  signatures (`AES_256_GCM_HKDF_SHA512_COMMIT_KEY`, like ours unsigned) and with the SDK's default
  suite, which also signs every message with ECDSA P-384.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aws_encryption_sdk  # type: ignore[import-untyped]
import tink  # type: ignore[import-untyped]
from aws_encryption_sdk import CommitmentPolicy
from aws_encryption_sdk.caches.local import LocalCryptoMaterialsCache  # type: ignore[import-untyped]
from aws_encryption_sdk.identifiers import (  # type: ignore[import-untyped]
    Algorithm,
    EncryptionKeyType,
    WrappingAlgorithm,
)
from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey  # type: ignore[import-untyped]
from aws_encryption_sdk.key_providers.raw import RawMasterKeyProvider  # type: ignore[import-untyped]
from aws_encryption_sdk.materials_managers.caching import (  # type: ignore[import-untyped]
    CachingCryptoMaterialsManager,
)
from bson.binary import STANDARD, Binary
from bson.codec_options import CodecOptions
from pymongo import MongoClient
from pymongo.encryption import ClientEncryption
from tink import aead

# `pymongo.encryption.Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Random` (a str enum), by value: the
# re-export is invisible to type checkers.
RANDOM = "AEAD_AES_256_CBC_HMAC_SHA_512-Random"


@dataclass(frozen=True, slots=True)
class Plain:
    """One event as every competitor gets it: its user, canonical JSON and our associated data."""

    user_id: str
    plaintext: bytes
    associated_data: bytes


class TinkAead:
    """Tink AEAD (AES256_GCM template), one keyset handle per user."""

    def __init__(self, users: Sequence[str]) -> None:
        aead.register()
        template = aead.aead_key_templates.AES256_GCM
        self._primitives = {user: tink.new_keyset_handle(template).primitive(aead.Aead) for user in users}

    def run(self, items: Sequence[Plain]) -> list[bytes]:
        """Encrypt every item under its user's keyset."""
        primitives = self._primitives
        return [primitives[item.user_id].encrypt(item.plaintext, item.associated_data) for item in items]


class MongoExplicit:
    """MongoDB explicit encryption, random algorithm, one data key per user in a throwaway key vault.

    Args:
        mongo_url: The MongoDB-compatible server that holds the key vault collection.
        users: One data key is created for each.
    """

    def __init__(self, mongo_url: str, users: Sequence[str]) -> None:
        self._database = f"pulseseal_bench_keyvault_{secrets.token_hex(4)}"
        self._client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        self._encryption: ClientEncryption[dict[str, Any]] = ClientEncryption(
            {"local": {"key": os.urandom(96)}},
            f"{self._database}.datakeys",
            self._client,
            CodecOptions(uuid_representation=STANDARD),
            key_expiration_ms=0,  # 0: cached data keys never expire, so no key vault reads while timed
        )
        try:
            self._key_ids: dict[str, Binary] = {
                user: self._encryption.create_data_key("local") for user in users
            }
            # The first use of a data key reads it from the key vault (one `find`); after that it is in
            # libmongocrypt's cache. Warm every key now, so the timed runs measure what ours do: keys
            # already in memory. How long the reads took is reported on its own.
            started = time.perf_counter()
            for user in users:
                self._encryption.encrypt(b"warm", RANDOM, key_id=self._key_ids[user])
            self.first_use_ms = (time.perf_counter() - started) / max(len(users), 1) * 1000
        except BaseException:
            self.close()
            raise

    def run(self, items: Sequence[Plain]) -> list[Binary]:
        """Encrypt every item's plaintext (as BSON binary) under its user's data key."""
        encrypt, key_ids = self._encryption.encrypt, self._key_ids
        return [encrypt(item.plaintext, RANDOM, key_id=key_ids[item.user_id]) for item in items]

    def close(self) -> None:
        """Drop the key vault database and close the clients."""
        try:
            self._encryption.close()
            self._client.drop_database(self._database)
        finally:
            self._client.close()


class _UserKeys(RawMasterKeyProvider):  # type: ignore[misc]
    # A raw master key provider serving one user's wrapping key (the SDK's documented extension point).
    # The SDK's `__new__` accepts only configuration keywords, so the key is set after construction.
    provider_id = "pulseseal-bench"
    wrapping_keys: dict[bytes, bytes]

    def _get_raw_key(self, key_id: bytes) -> WrappingKey:
        return WrappingKey(
            wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
            wrapping_key=self.wrapping_keys[key_id],
            wrapping_key_type=EncryptionKeyType.SYMMETRIC,
        )


def _user_keys(user_id: str) -> _UserKeys:
    provider = _UserKeys()
    provider.wrapping_keys = {user_id.encode(): os.urandom(32)}
    provider.add_master_key(user_id.encode())
    return provider


class AwsEsdk:
    """AWS Encryption SDK `encrypt` through a caching CMM per user over a raw AES master key.

    Args:
        users: One wrapping key and one caching CMM are made for each.
        signed: Use the SDK's default suite (ECDSA P-384 signatures) instead of the unsigned committing one.
    """

    def __init__(self, users: Sequence[str], *, signed: bool = False) -> None:
        self._client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT
        )
        self._options: dict[str, Any] = (
            {} if signed else {"algorithm": Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY}
        )
        cache = LocalCryptoMaterialsCache(capacity=2 * len(users) + 10)
        self._managers = {}
        for user in users:
            self._managers[user] = CachingCryptoMaterialsManager(
                master_key_provider=_user_keys(user), cache=cache, max_age=3600.0, partition_name=user
            )
        # Fill the cache (one data key per user) before anything is timed.
        self.run([Plain(user, b"warm", b"") for user in users])

    def run(self, items: Sequence[Plain]) -> list[bytes]:
        """Encrypt every item's plaintext into an ESDK message under its user's key."""
        encrypt, managers, options = self._client.encrypt, self._managers, self._options
        messages = []
        for item in items:
            message, _header = encrypt(
                source=item.plaintext,
                materials_manager=managers[item.user_id],
                encryption_context={"user_id": item.user_id},
                **options,
            )
            messages.append(message)
        return messages
