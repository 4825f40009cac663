"""Master-key rotation: re-wrap every data key under a new master key, inside this process.

Each data key is unwrapped with the old master key and wrapped with the new one in memory, then written
back with a compare-and-set, so no data key ever leaves the key service's process and a concurrent shred
is never undone. The store's metadata records the rewrap while it runs: a key service started meanwhile
refuses to start, one already running answers 503 instead of creating keys under the old master key, and
running the rewrap again after an interruption carries on where it stopped (wrapped keys already under the
new master key are skipped). The store switches to the new master key only after a pass finds nothing
left to re-wrap.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice import scripts
from keyservice.transport_keys import rewrap_transport_keys
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable, KeyUnwrapError
from keyservice.wrapping import MasterKey

_SCAN_COUNT = 1000


class RewrapRefused(KeyServiceError):
    """The rewrap cannot start: the keys given do not match the store's state."""

    default_reason = "rewrap_refused"
    title = "Rewrap refused"


@dataclass(frozen=True, slots=True)
class RewrapReport:
    """What a rewrap did."""

    keys_rewrapped: int
    already_done: bool


async def rewrap(
    redis: Redis,
    old: MasterKey,
    new: MasterKey,
    *,
    prefix: str,
    on_batch: Callable[[int], None] | None = None,
) -> RewrapReport:
    """Re-wrap every data key of the store at `prefix` from `old` to `new`, then switch the store to `new`.

    Args:
        redis: The key-store Redis.
        old: The master key the store is wrapped under now.
        new: The new master key.
        prefix: The store's key prefix.
        on_batch: Called with the running count after each batch (progress; tests interrupt here).

    Raises:
        RewrapRefused: `old` is not the store's key, `new` equals it, or a rewrap to another key is running.
        KeyUnwrapError: a stored key opens under neither master key.
        KeyServiceUnavailable: Redis does not answer.
    """
    meta_key = f"{prefix}meta"
    try:
        return await _rewrap(redis, old, new, prefix, meta_key, on_batch)
    except RedisError:
        raise KeyServiceUnavailable("key store unavailable during rewrap; run it again to carry on") from None


async def _rewrap(
    redis: Redis,
    old: MasterKey,
    new: MasterKey,
    prefix: str,
    meta_key: str,
    on_batch: Callable[[int], None] | None,
) -> RewrapReport:
    check, to_check = await redis.hmget(meta_key, ["mk_check", "rewrap_check"])
    check_text = _text(check)
    if check_text == new.check_value and to_check is None:
        return RewrapReport(0, already_done=True)
    if new.check_value == old.check_value:
        raise RewrapRefused("the new master key is the current one")
    if check_text != old.check_value:
        raise RewrapRefused("the current master key does not match the key store (check value differs)")
    await redis.hsetnx(meta_key, "rewrap_check", new.check_value)
    if _text(await redis.hget(meta_key, "rewrap_check")) != new.check_value:
        raise RewrapRefused("a rewrap to another master key is in progress; finish it with that key")
    # From here on the key service refuses to create keys under the old master key (see scripts.CREATE).
    await redis.hset(meta_key, "rewrap_to", new.key_id_hex)
    cas = redis.register_script(scripts.REWRAP_CAS)
    total = 0
    while True:
        changed = await _one_pass(redis, cas, old, new, prefix, total, on_batch)
        changed += await rewrap_transport_keys(redis, old, new, prefix=prefix)
        total += changed
        if changed == 0:
            break
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(meta_key, mapping={"mk_id": new.key_id_hex, "mk_check": new.check_value})
        pipe.hdel(meta_key, "rewrap_to", "rewrap_check")
        await pipe.execute()
    return RewrapReport(total, already_done=False)


async def _one_pass(
    redis: Redis,
    cas: Any,
    old: MasterKey,
    new: MasterKey,
    prefix: str,
    done_before: int,
    on_batch: Callable[[int], None] | None,
) -> int:
    changed = 0
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "u:*"
    user_prefix = len(prefix) + 2
    cursor: int = 0
    while True:
        cursor, names = await redis.scan(cursor, match=pattern, count=_SCAN_COUNT)
        if names:
            async with redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(name)
                hashes = await pipe.execute()
            keys: list[bytes] = []
            args: list[Any] = []
            for name, fields in zip(names, hashes, strict=True):
                user_id = _text(name)[user_prefix:]
                for field, wrapped in fields.items():
                    if not field.startswith(b"v:") or new.owns(wrapped):
                        continue
                    if not old.owns(wrapped):
                        raise KeyUnwrapError("a stored key is wrapped under neither master key")
                    version = int(field[2:])
                    material = old.unwrap(user_id, version, wrapped)
                    keys.append(_bytes(name))
                    args += [field, wrapped, new.wrap(user_id, version, material)]
            if keys:
                changed += int(await cas(keys=keys, args=args))
            if on_batch is not None:
                on_batch(done_before + changed)
        if cursor == 0:
            return changed


def _text(value: object) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()
