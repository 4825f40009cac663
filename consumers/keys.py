"""The encryptor's key source: what the sealer asks for current keys, and the key service client behind it.

Every refusal of the key service that is not about a user (bad credentials, scope, network, the service
being away) is an infrastructure problem an operator fixes; until then the encryptor keeps the events
on the queue and retries. Only a shredded user's events are dead-lettered.

While the encryptor runs, `following_shreds` keeps the client's key cache honest: a shredded user's keys
are dropped within a second of the shred (contract §6), so that user's later events are refused by the key
service and dead-lettered `user_shredded`, never sealed with a key the cache still held.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Protocol

from consumers import metrics
from keyservice.client import EncryptKeys, KeyServiceClient
from keyservice.client.shreds import ShredFollower
from keyservice.wire.errors import KeyServiceError
from keyservice.wire.models import MissingReason

SHREDDED = MissingReason.SHREDDED
"""The reason in `EncryptKeys.refused` for a user whose keys were destroyed."""


class KeysUnavailable(Exception):
    """The key service could not be reached or answered with a transient error."""


class KeySource(Protocol):
    """Where the encryptor gets current data keys (the key service client, or a fake in unit tests)."""

    async def encrypt_keys(self, user_ids: Collection[str]) -> EncryptKeys:
        """Current keys for `user_ids`, and the users refused one (`refused[user] == SHREDDED`).

        Raises:
            KeysUnavailable: transiently unable to answer; the caller retries.
        """
        ...

    async def reachable(self) -> bool:
        """Whether the source answers now (the encryptor's `/readyz`); never raises for "no"."""
        ...


class KeyServiceSource:
    """`KeySource` backed by `KeyServiceClient` (cache, single-flight and retries included)."""

    def __init__(self, client: KeyServiceClient) -> None:
        self._client = client

    async def reachable(self) -> bool:
        """Whether the key service answers its `/healthz` with 200."""
        return await self._client.healthy()

    async def encrypt_keys(self, user_ids: Collection[str]) -> EncryptKeys:
        """Current keys per user; refused users with the reason.

        Raises:
            KeysUnavailable: the key service is away or refused the encryptor itself.
        """
        cache = self._client.current_key_cache
        hits, misses = cache.hits, cache.misses
        try:
            return await self._client.encrypt_keys(user_ids)
        except KeyServiceError as exc:
            raise KeysUnavailable(f"key service: {type(exc).__name__} ({exc.reason})") from None
        finally:
            metrics.KEY_CACHE_HITS.inc(cache.hits - hits)
            metrics.KEY_CACHE_MISSES.inc(cache.misses - misses)


@asynccontextmanager
async def following_shreds(client: KeyServiceClient) -> AsyncIterator[ShredFollower]:
    """Follow the key service's shred notices (and sweep expired keys) for as long as the block runs."""
    follower = ShredFollower(client, on_shred=lambda _user: metrics.SHREDS_FOLLOWED.inc())
    follower.start()
    try:
        yield follower
    finally:
        await follower.aclose()
