"""Transport keys on the encryptor's and the administrator's side (contract §4 and §6).

`TransportKeyRing` is what the encryptor holds: the PRIVATE parts of every transport key not yet retired,
fetched under the `transport:open` scope, cached for `lifetime_s` and fetched again at once when a message
names a key id the ring does not know (at most once per `min_refetch_s`, so messages with made-up ids
cannot hammer the key service). Dropping the keys after their lifetime is what makes a retired key stop
opening messages in running encryptors.

The admin calls (`rotate_transport_key`, `retire_transport_key`) are plain functions over a
`KeyServiceClient` with the `keys:admin` scope. Producers use transport_public.py (the public key only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pydantic import ValidationError

from keyservice.client.api import KeyServiceClient
from keyservice.client.transport_public import MAX_STALE_S, TransportSealer, decode_part
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable
from keyservice.wire.models import parse_answer
from keyservice.wire.transport import (
    TransportKeyCurrent,
    TransportKeyUnknown,
    TransportPrivateKeysAnswer,
    TransportRetireAnswer,
    TransportRotateAnswer,
)
from pulseseal.transit import (
    InvalidTransportKey,
    SealedMessage,
    TransportPrivateKey,
    open_message,
)

log = logging.getLogger("pulseseal.transport")

OPEN_PATH = "/v1/transport/keys/open"
ROTATE_PATH = "/v1/transport/rotate"
LIFETIME_S = 60.0


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
            keys = TransportPrivateKeysAnswer.model_validate_json(answer).keys
            fresh = {
                k.key_id: TransportPrivateKey(k.key_id, decode_part(k.mlkem768_seed), decode_part(k.x25519))
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
    return parse_answer(TransportRotateAnswer, answer).key_id


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
    return parse_answer(TransportRetireAnswer, answer).retired_at


async def current_transport_key_id(sealer: TransportSealer) -> str:
    """The id of the current transport key (asks the key service now)."""
    sealer.forget()
    return (await sealer.public_key()).key_id
