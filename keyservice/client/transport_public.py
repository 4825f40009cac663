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
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import ValidationError

from keyservice.client.replicas import Replicas, Transports, Turns, attempts_for, split_list
from keyservice.wire.errors import KeyServiceUnavailable
from keyservice.wire.transport import TransportPublicKeyAnswer
from pulseseal.retry import Backoff, Sleep, retry, retry_after_s
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
        base_url: The key service URL, or its replicas' URLs (a list, or one comma-separated string): a
            fetch fails over from one to the next, as the key-service client does
            (keyservice/client/replicas.py); `http://` only to loopback.
        ca_file: CA bundle for an `https://` key service (default: the system's).
        refresh_s: How long a fetched public key is used before asking again.
        max_stale_s: How long a cached key is still used while refreshing fails.
        timeout_s: Timeout of one HTTP attempt.
        retries: Further attempts after a failed one, each to the next replica, with backoff and jitter
            (none before a replica this fetch has not tried yet); every replica is tried at least once.
        transport: httpx transport, or one per URL (tests pass ASGI transports).
        clock: Monotonic clock (injectable for tests).
        sleep: The wait between attempts (injectable for tests).

    Raises:
        InsecureTransport: a URL is `http://` to a non-loopback host.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        *,
        ca_file: Path | None = None,
        refresh_s: float = REFRESH_S,
        max_stale_s: float = MAX_STALE_S,
        timeout_s: float = 5.0,
        retries: int = 2,
        transport: Transports = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        urls = split_list(base_url) if isinstance(base_url, str) else list(base_url)
        self._replicas = Replicas.open(urls, ca_file=ca_file, timeout_s=timeout_s, transport=transport)
        self._sleep = sleep
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
        return cls(settings.keyservice_urls, ca_file=settings.keyservice_ca, **options)

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
        await self._replicas.aclose()

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
        turns = Turns(self._replicas.order())

        async def attempt() -> TransportPublicKey:
            replica, fresh_next = turns.take()
            self.fetches += 1
            try:
                response = await replica.http.get(PUBLIC_KEY_PATH)
            except httpx.TransportError as exc:
                self._replicas.failed(replica)
                raise _FetchFailed(type(exc).__name__, fresh_next) from None
            if response.status_code != 200:
                self._replicas.failed(replica)
                asked = retry_after_s(response.headers.get("Retry-After"))
                raise _FetchFailed(
                    f"HTTP {response.status_code}", fresh_next if fresh_next is not None else asked
                )
            self._replicas.answered(replica)
            try:
                return _public_key(response.json())
            except (ValueError, ValidationError, InvalidTransportKey):
                raise TransportKeyUnavailable("the key service sent a malformed transport key") from None

        try:
            return await retry(
                attempt,
                on=lambda exc: isinstance(exc, _FetchFailed),
                backoff=Backoff(initial_s=0.1, cap_s=2.0, jitter=1.0),
                attempts=attempts_for(self._retries, len(turns)),
                sleep=self._sleep,
            )
        except _FetchFailed as last:
            raise TransportKeyUnavailable(
                f"cannot fetch the transport key from the key service ({last})"
            ) from None


class _FetchFailed(Exception):
    """One failed fetch (its message names the failure, never a body), and how long the service asked
    to wait (`Retry-After`, read by `pulseseal.retry`) — 0 when the next attempt goes to another replica."""

    def __init__(self, failure: str, retry_after_s: float | None) -> None:
        super().__init__(failure)
        self.retry_after_s = retry_after_s


def _public_key(document: Any) -> TransportPublicKey:
    answer = TransportPublicKeyAnswer.model_validate(document)
    return TransportPublicKey.from_raw(
        answer.key_id, decode_part(answer.mlkem768), decode_part(answer.x25519)
    )
