"""The key service's restricted user on its Redis: checked at start, before anything is read or written.

infra/redis.sh gives the key service an ACL user of its own (docs/keyservice.md, "The key store's users"):
keys under one pattern, no pub/sub, no @dangerous command but INFO, CONFIG GET and BGREWRITEAOF. Two things
can be wrong with it that would otherwise surface late and obscurely: the user may not touch the configured
key prefix (every request would fail with NOPERM), and the server may still hold the `default` user's
password in `requirepass`, which CONFIG GET shows to the restricted user — the restriction would then be
one command away from undone.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, RedisError, ResponseError

from keyservice.wire.errors import StartupRefused

log = logging.getLogger(__name__)

#: A key under the prefix that nothing stores; only its permission is looked at.
_PROBE = "acl-probe"


async def check_restricted_user(redis: Redis, where: str, username: str, prefix: str) -> None:
    """Refuse to start when `username` may not use keys under `prefix`; warn when it can read the
    `default` user's password through CONFIG GET requirepass.

    Raises:
        StartupRefused: the user may not touch keys under the prefix, or Redis is not answering.
    """
    try:
        await redis.exists(prefix + _PROBE)
    except NoPermissionError:
        raise StartupRefused(
            f"key-store Redis at {where}: user {username} may not use keys under the prefix {prefix!r}: give it "
            "a key pattern that covers the prefix (PULSESEAL_KEYSTORE_REDIS_KEYSERVICE_KEYS for infra/redis.sh, "
            "default `pulseseal:*`, then `pulseseal services up`) or set PULSESEAL_KEYSTORE_PREFIX under it"
        ) from None
    except RedisError:
        raise StartupRefused(f"key-store Redis at {where} is not answering") from None
    try:
        reply: dict[Any, Any] = await redis.config_get("requirepass")
    except ResponseError:
        return  # CONFIG GET refused: the snapshot check that follows says what that means
    except RedisError:
        raise StartupRefused(f"key-store Redis at {where} is not answering") from None
    if any(value for value in reply.values()):
        log.warning(
            "key-store Redis at %s keeps the default user's password in `requirepass`, which CONFIG GET shows "
            "to the key service's user %s: run `pulseseal services up` (infra/redis.sh moves it into the "
            "default user's ACL without a restart) or do the same by hand (docs/keyservice.md)",
            where,
            username,
        )
