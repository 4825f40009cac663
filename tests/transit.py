"""Transport sealing in tests: a local transport key (real HPKE through pulseseal/transit.py), for tests
where the key service adds nothing, and the keys of a real key service for tests that run one.

Every message a test puts on the broker is sealed like a producer's, and every message a test takes off
it is opened — and asserted to have been sealed — before its body is looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consumers.transit import TransportGate
from keyservice.client import KeyServiceClient
from keyservice.client.transport_keys import TransportKeyRing
from pulseseal.settings import Settings
from pulseseal.transit import (
    TRANSPORT_HEADER,
    TRANSPORT_KEY_HEADER,
    SealedMessage,
    TransportPrivateKey,
    open_message,
    seal,
    sealed_from,
)

LOCAL_KEY = TransportPrivateKey.generate()


class LocalSealer:
    """Seals under a local transport key (by default `LOCAL_KEY`), as a producer's sealer does."""

    def __init__(self, key: TransportPrivateKey = LOCAL_KEY) -> None:
        self.key = key
        self.sealed = 0

    async def seal(self, plaintext: bytes, content_type: str) -> SealedMessage:
        """Seal under the local key."""
        self.sealed += 1
        return seal(plaintext, self.key.public_key, content_type)

    async def aclose(self) -> None:
        """Nothing to release."""


class LocalKeyRing:
    """Opens with local transport keys; a test retires one by removing it from `keys`."""

    def __init__(self, *keys: TransportPrivateKey) -> None:
        self.keys = {k.key_id: k for k in (keys or (LOCAL_KEY,))}

    async def open(self, sealed: SealedMessage) -> bytes:
        """Open with the local keys."""
        return open_message(sealed, self.keys)


def local_gate() -> TransportGate:
    """An encryptor's transport gate on the local key."""
    return TransportGate(LocalKeyRing(), LocalSealer())


def sealed_body(
    plaintext: bytes, content_type: str, key: TransportPrivateKey = LOCAL_KEY
) -> tuple[bytes, dict[str, Any]]:
    """`(body, headers)` of a message sealed under `key`."""
    sealed = seal(plaintext, key.public_key, content_type)
    return sealed.body, sealed.headers


def open_raw(
    body: bytes,
    headers: Mapping[str, Any] | None,
    content_type: str | None,
    keys: Mapping[str, TransportPrivateKey] | None = None,
) -> bytes:
    """The plaintext of a message taken off the broker, asserting first that it was transport-sealed."""
    headers = headers or {}
    assert headers.get(TRANSPORT_HEADER) == "hpke-v1", f"message is not transport-sealed: {sorted(headers)}"
    assert TRANSPORT_KEY_HEADER in headers
    sealed = sealed_from(body, headers, content_type)
    return open_message(sealed, keys if keys is not None else {LOCAL_KEY.key_id: LOCAL_KEY})


async def keyservice_keys(keyservice_url: str, home: Path | None = None) -> dict[str, TransportPrivateKey]:
    """Every live transport key of a running key service, fetched as the encryptor would."""
    settings = (
        Settings(keyservice_url=keyservice_url)
        if home is None
        else Settings(keyservice_url=keyservice_url, home=home)
    )
    async with KeyServiceClient.from_settings(settings, "encryptor") as client:
        return await TransportKeyRing(client).live_keys()
