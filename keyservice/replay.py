"""Single use of token ids: each `jti` is remembered in the key-store Redis until its token expires."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice.auth import jti_key
from keyservice.wire.errors import KeyServiceUnavailable


class RedisReplayGuard:
    """`SET NX EX` per token id: atomic, so two replicas cannot both accept one token.

    Args:
        redis: The key-store Redis.
        prefix: Key prefix of this key store.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def first_use(self, caller_id: str, jti: str, ttl_s: int) -> bool:
        """True the first time the token id is seen.

        Raises:
            KeyServiceUnavailable: Redis does not answer (fail closed: no token is accepted unchecked).
        """
        try:
            stored = await self._redis.set(jti_key(self._prefix, caller_id, jti), b"1", nx=True, ex=ttl_s)
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        return bool(stored)
