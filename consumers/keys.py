"""The encryptor's key source: the key service client, with its errors mapped to "retry later".

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

from consumers import metrics
from consumers.sealing import EncryptKeys, KeysUnavailable
from keyservice.client import KeyServiceClient
from keyservice.client.shreds import ShredFollower
from keyservice.wire.errors import KeyServiceError

SHREDDED = "shredded"


class KeyServiceSource:
    """`KeySource` backed by `KeyServiceClient` (cache, single-flight and retries included)."""

    def __init__(self, client: KeyServiceClient) -> None:
        self._client = client

    async def encrypt_keys(self, user_ids: Collection[str]) -> EncryptKeys:
        """Current keys per user; shredded users listed apart.

        Raises:
            KeysUnavailable: the key service is away or refused the encryptor itself.
        """
        cache = self._client.current_key_cache
        hits, misses = cache.hits, cache.misses
        try:
            granted = await self._client.encrypt_keys(user_ids)
        except KeyServiceError as exc:
            raise KeysUnavailable(f"key service: {type(exc).__name__} ({exc.reason})") from None
        finally:
            metrics.KEY_CACHE_HITS.inc(cache.hits - hits)
            metrics.KEY_CACHE_MISSES.inc(cache.misses - misses)
        shredded = frozenset(user for user, reason in granted.refused.items() if reason == SHREDDED)
        return EncryptKeys(keys=granted.keys, shredded=shredded)


@asynccontextmanager
async def following_shreds(client: KeyServiceClient) -> AsyncIterator[ShredFollower]:
    """Follow the key service's shred notices (and sweep expired keys) for as long as the block runs."""
    follower = ShredFollower(client, on_shred=lambda _user: metrics.SHREDS_FOLLOWED.inc())
    follower.start()
    try:
        yield follower
    finally:
        await follower.aclose()
