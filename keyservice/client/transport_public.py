"""The transport public key on a producer's side (contract §4 and §6): all a producer links to seal.

`TransportSealer` fetches the current transport PUBLIC key from `GET /v1/transport/key` with no token,
caches it and refreshes it every `refresh_s` (so producers follow a rotation within that time), and
seals with it. A refresh that fails keeps the cached key for up to `max_stale_s` (older keys still open
until an operator retires them, which the runbook does only after the queues drained); with no usable key
a publish fails with `TransportKeyUnavailable`.

This module has no path to a private key or a caller token: it imports neither the key-service client
(`keyservice.client.api`) nor the token minting, and producers import only this from `keyservice.client`
(tests/security/test_callers.py holds them to it). The encryptor's side is transport_keys.py.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import random
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import ValidationError

from keyservice.client.transport import check_client_url
from keyservice.wire.errors import KeyServiceUnavailable
from keyservice.wire.transport import TransportPublicKeyAnswer
from pulseseal.settings import Settings
from pulseseal.transit import InvalidTransportKey, SealedMessage, TransportPublicKey, seal

log = logging.getLogger("pulseseal.transport")

PUBLIC_KEY_PATH = "/v1/transport/key"
REFRESH_S = 60.0
MAX_STALE_S = 3600.0


def decode_part(text: str) -> bytes:
    """Standard base64 of a key part.

    Raises:
        InvalidTransportKey: not standard base64.
    """
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidTransportKey("transport key parts must be standard base64") from None


class TransportKeyUnavailable(KeyServiceUnavailable):
    """No usable transport key: the key service cannot be reached (or sent a malformed key)."""

    default_reason = "transport_key_unavailable"


class TransportSealer:
    """Seals message bodies under the current transport public key (producers hold only this).

    Args:
        base_url: The key service URL; `http://` only to loopback.
        ca_file: CA bundle for an `https://` key service (default: the system's).
        refresh_s: How long a fetched public key is used before asking again.
        max_stale_s: How long a cached key is still used while refreshing fails.
        timeout_s: Timeout of one HTTP attempt.
        retries: Further attempts after a failed one, with backoff and jitter.
        transport: httpx transport (tests pass an ASGI transport).
        clock: Monotonic clock (injectable for tests).

    Raises:
        InsecureTransport: `base_url` is `http://` to a non-loopback host.
    """

    def __init__(
        self,
        base_url: str,
        *,
        ca_file: Path | None = None,
        refresh_s: float = REFRESH_S,
        max_stale_s: float = MAX_STALE_S,
        timeout_s: float = 5.0,
        retries: int = 2,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_client_url(base_url)
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), verify=verify, timeout=timeout_s, transport=transport
        )
        self._refresh_s = refresh_s
        self._max_stale_s = max_stale_s
        self._retries = retries
        self._clock = clock
        self._key: TransportPublicKey | None = None
        self._fetched_at = 0.0
        self._fetching: asyncio.Task[TransportPublicKey] | None = None
        self.fetches = 0

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> TransportSealer:
        """A sealer for the key service of `settings` (URL and CA).

        Raises:
            InsecureTransport: the URL is `http://` to a non-loopback host.
        """
        return cls(settings.keyservice_url, ca_file=settings.keyservice_ca, **options)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._fetching is not None:
            self._fetching.cancel()
        await self._http.aclose()

    def forget(self) -> None:
        """Ask for the current key again before the next seal (after a rotation this process made)."""
        self._fetched_at = float("-inf")

    async def seal(self, plaintext: bytes, content_type: str) -> SealedMessage:
        """Seal one message body under the current transport key.

        Raises:
            TransportKeyUnavailable: no usable transport key (the key service cannot be reached).
        """
        return seal(plaintext, await self.public_key(), content_type)

    async def public_key(self) -> TransportPublicKey:
        """The current transport public key (cached; refreshed after `refresh_s`).

        Raises:
            TransportKeyUnavailable: no key is cached and none can be fetched, or the cached one is older
                than `max_stale_s` and refreshing it fails.
        """
        age = self._clock() - self._fetched_at
        if self._key is not None and age < self._refresh_s:
            return self._key
        try:
            return await self._fetch_once()
        except TransportKeyUnavailable:
            if self._key is not None and age < self._max_stale_s:
                log.warning("cannot refresh the transport key; still sealing under %s", self._key.key_id)
                return self._key
            raise

    async def _fetch_once(self) -> TransportPublicKey:
        # Single flight: a burst of publishes after the refresh time makes one request.
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch())
            self._fetching.add_done_callback(self._fetched)
        return await asyncio.shield(self._fetching)

    def _fetched(self, task: asyncio.Task[TransportPublicKey]) -> None:
        self._fetching = None
        if not task.cancelled() and task.exception() is None:
            self._key, self._fetched_at = task.result(), self._clock()

    async def _fetch(self) -> TransportPublicKey:
        attempt = 0
        while True:
            self.fetches += 1
            try:
                response = await self._http.get(PUBLIC_KEY_PATH)
                if response.status_code == 200:
                    return _public_key(response.json())
                failure = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                failure = type(exc).__name__
            except (ValueError, ValidationError, InvalidTransportKey):
                raise TransportKeyUnavailable("the key service sent a malformed transport key") from None
            if attempt >= self._retries:
                raise TransportKeyUnavailable(
                    f"cannot fetch the transport key from the key service ({failure})"
                )
            attempt += 1
            await asyncio.sleep(random.uniform(0, 0.05 * 2**attempt))


def _public_key(document: Any) -> TransportPublicKey:
    answer = TransportPublicKeyAnswer.model_validate(document)
    return TransportPublicKey.from_raw(
        answer.key_id, decode_part(answer.mlkem768), decode_part(answer.x25519)
    )
