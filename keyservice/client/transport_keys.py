"""Transport keys on the caller's side (contract §4 and §6).

`TransportSealer` is what every producer holds: the current transport PUBLIC key, fetched from
`GET /v1/transport/key` with no token, cached and refreshed every `refresh_s` (so producers follow a
rotation within that time), and `seal`. A refresh that fails keeps the cached key for up to `max_stale_s`
(older keys still open until an operator retires them, which the runbook does only after the queues
drained); with no usable key a publish fails with `TransportKeyUnavailable`.

`TransportKeyRing` is what the encryptor holds: the PRIVATE parts of every transport key not yet retired,
fetched under the `transport:open` scope, cached for `lifetime_s` and fetched again at once when a message
names a key id the ring does not know (at most once per `min_refetch_s`, so messages with made-up ids
cannot hammer the key service). Dropping the keys after their lifetime is what makes a retired key stop
opening messages in running encryptors.

The admin calls (`rotate_transport_key`, `retire_transport_key`) are plain functions over a
`KeyServiceClient` with the `keys:admin` scope.
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

from keyservice.client.api import KeyServiceClient
from keyservice.client.transport import check_client_url
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable
from keyservice.wire.transport import (
    TransportKeyCurrent,
    TransportKeyUnknown,
    TransportPrivateKeysAnswer,
    TransportPublicKeyAnswer,
    TransportRetireAnswer,
    TransportRotateAnswer,
)
from pulseseal.settings import Settings
from pulseseal.transit import (
    InvalidTransportKey,
    SealedMessage,
    TransportPrivateKey,
    TransportPublicKey,
    open_message,
    seal,
)

log = logging.getLogger("pulseseal.transport")

PUBLIC_KEY_PATH = "/v1/transport/key"
OPEN_PATH = "/v1/transport/keys/open"
ROTATE_PATH = "/v1/transport/rotate"
REFRESH_S = 60.0
MAX_STALE_S = 3600.0
LIFETIME_S = 60.0


class TransportKeyUnavailable(KeyServiceUnavailable):
    """No usable transport key: the key service cannot be reached (or sent a malformed key)."""

    default_reason = "transport_key_unavailable"


def _decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidTransportKey("transport key parts must be standard base64") from None


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
    return TransportPublicKey.from_raw(answer.key_id, _decode(answer.mlkem768), _decode(answer.x25519))


class TransportKeyRing:
    """The encryptor's private transport keys, and opening messages with them.

    Args:
        client: A key-service client whose caller has the `transport:open` scope.
        lifetime_s: How long fetched keys are kept before fetching them again.
        min_refetch_s: An unknown key id fetches the keys again at most this often.
        max_stale_s: How long the keys in hand are still used while fetching them fails.
        clock: Monotonic clock (injectable for tests).
    """

    def __init__(
        self,
        client: KeyServiceClient,
        *,
        lifetime_s: float = LIFETIME_S,
        min_refetch_s: float = 1.0,
        max_stale_s: float = MAX_STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._lifetime_s = lifetime_s
        self._max_stale_s = max_stale_s
        self._min_refetch_s = min_refetch_s
        self._clock = clock
        self._keys: dict[str, TransportPrivateKey] = {}
        self._fetched_at = float("-inf")
        self._fetching: asyncio.Task[None] | None = None
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TransportKeyRing(key_ids={sorted(self._keys)!r})"

    async def open(self, sealed: SealedMessage) -> bytes:
        """Open a sealed message, fetching the keys first when they are old or the key id is new.

        Raises:
            TransportUnopenable: the message does not open (unknown or retired key, altered body or
                content type); which one is never said.
            KeyServiceError: the keys could not be fetched (the message is not at fault: hand it back).
        """
        age = self._clock() - self._fetched_at
        known = sealed.key_id in self._keys
        if age >= self._lifetime_s or (not known and age >= self._min_refetch_s):
            try:
                await self._refresh()
            except KeyServiceUnavailable:
                # The keys in hand still open what they opened a moment ago; a key-service outage must
                # not dead-letter every message once the lifetime is over (up to `max_stale_s`).
                if not known or age >= self._max_stale_s:
                    raise
                log.warning("cannot refresh the transport keys; still opening with the ones in hand")
        return open_message(sealed, self._keys)

    async def live_keys(self) -> dict[str, TransportPrivateKey]:
        """The keys in hand by id, fetched now when they are older than their lifetime.

        Raises:
            KeyServiceError: the keys could not be fetched.
        """
        if self._clock() - self._fetched_at >= self._lifetime_s:
            await self._refresh()
        return dict(self._keys)

    async def _refresh(self) -> None:
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch())
            self._fetching.add_done_callback(self._done)
        await asyncio.shield(self._fetching)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._fetching = None

    async def _fetch(self) -> None:
        self.fetches += 1
        answer = await self._client.call("POST", OPEN_PATH, "transport:open", {})
        try:
            keys = TransportPrivateKeysAnswer.model_validate(answer).keys
            fresh = {
                k.key_id: TransportPrivateKey(k.key_id, _decode(k.mlkem768_seed), _decode(k.x25519))
                for k in keys
            }
        except (ValidationError, InvalidTransportKey):
            raise KeyServiceError(
                "key service sent malformed transport keys", reason="bad_response"
            ) from None
        # Replaced whole: a key that is no longer listed (retired) is dropped here.
        self._keys, self._fetched_at = fresh, self._clock()


async def rotate_transport_key(client: KeyServiceClient) -> str:
    """Make a new transport key current (`keys:admin`); returns its id."""
    answer = await client.call("POST", ROTATE_PATH, "keys:admin", None, idempotent=False)
    return TransportRotateAnswer.model_validate(answer).key_id


async def retire_transport_key(client: KeyServiceClient, key_id: str) -> str:
    """Retire (destroy) a transport key that is not current (`keys:admin`); returns when (RFC 3339).

    Raises:
        TransportKeyCurrent: it is the current key.
        TransportKeyUnknown: no key has this id.
    """
    try:
        answer = await client.call("DELETE", f"/v1/transport/keys/{key_id}", "keys:admin", None)
    except KeyServiceError as exc:
        if exc.reason == TransportKeyCurrent.default_reason:
            raise TransportKeyCurrent(exc.detail) from None
        if exc.reason in (TransportKeyUnknown.default_reason, "invalid_key_id"):
            raise TransportKeyUnknown(exc.detail) from None
        raise
    return TransportRetireAnswer.model_validate(answer).retired_at


async def current_transport_key_id(sealer: TransportSealer) -> str:
    """The id of the current transport key (asks the key service now)."""
    sealer.forget()
    return (await sealer.public_key()).key_id
