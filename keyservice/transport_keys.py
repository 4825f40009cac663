"""Transport keys in the key service (contract §4 and §6): the HPKE keys that producers seal broker
messages to and that only the encryptors can open with.

They live in the key-store Redis beside the data keys, private parts (64-byte ML-KEM-768 seed ‖ 32-byte
X25519 key) wrapped under the master key by the wrapping recipe, in one hash `<prefix>transport`:
  `cur`       the current key id (the one `GET /v1/transport/key` serves)
  `k:<id>`    the wrapped private parts of a key not yet retired
  `r:<id>`    when the key was retired (RFC 3339); its `k:` field is gone for good
The first `GET /v1/transport/key` creates the first key exactly once under concurrency (one Lua script
decides); a rotation adds a key and makes it current; a retirement destroys a key that is not current.
Every creation, rotation, retirement and hand-out of private parts is written to the audit log; the public
key is not a secret and fetching it is not audited (it needs no token, and anyone may ask).
"""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice import scripts
from keyservice.wire.audit import AuditRecord, Outcome
from keyservice.wire.errors import KeyServiceUnavailable, KeyUnwrapError
from keyservice.wire.transport import (
    TransportKeyCurrent,
    TransportKeyUnknown,
    TransportPrivateKeysAnswer,
    TransportPublicKeyAnswer,
    TransportRetireAnswer,
    TransportRotateAnswer,
)
from keyservice.wire.transport import TransportPrivateKey as PrivateParts
from keyservice.wrapping import MasterKey
from pulseseal.transit import MLKEM768_SEED_BYTES, SUITE_NAME, TransportPrivateKey
from schemas.rfc3339 import format_rfc3339 as rfc3339

if TYPE_CHECKING:  # the service imports nothing from here; only the types are needed
    from keyservice.auth import VerifiedCaller
    from keyservice.service import KeyService

log = logging.getLogger(__name__)

PUBLIC_CACHE_S = 1.0

# KEYS[1] meta, KEYS[2] transport hash; ARGV mk_id, mode ('first' | 'rotate'), key id, wrapped.
# {1, cur id, wrapped} a key already exists (first) | {3, id} stored and made current.
_ADD = """
local m = redis.call('HMGET', KEYS[1], 'mk_id', 'rewrap_to')
if m[1] ~= ARGV[1] or m[2] then
  return redis.error_reply('PSRETIRED master key retired or rewrap in progress')
end
if ARGV[2] == 'first' then
  local cur = redis.call('HGET', KEYS[2], 'cur')
  if cur then return {1, cur, redis.call('HGET', KEYS[2], 'k:' .. cur)} end
end
redis.call('HSET', KEYS[2], 'cur', ARGV[3], 'k:' .. ARGV[3], ARGV[4])
return {3, ARGV[3]}
"""


class RetireReply(IntEnum):
    """The status that starts `_RETIRE`'s reply."""

    UNKNOWN = 0
    RETIRED_BEFORE = 2
    RETIRED = 3
    CURRENT = 4


# KEYS[1] transport hash; ARGV key id, time. {3, time} retired now | {2, time} retired before |
# {4} current | {0} unknown (RetireReply).
_RETIRE = """
local cur = redis.call('HGET', KEYS[1], 'cur')
if cur == ARGV[1] then return {4} end
local was = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if was then return {2, was} end
if redis.call('HEXISTS', KEYS[1], 'k:' .. ARGV[1]) == 0 then return {0} end
redis.call('HDEL', KEYS[1], 'k:' .. ARGV[1])
redis.call('HSET', KEYS[1], 'r:' .. ARGV[1], ARGV[2])
return {3, ARGV[2]}
"""


@dataclass(frozen=True, slots=True)
class Retired:
    """A retired transport key: its id and when it was retired."""

    key_id: str
    retired_at: str


class TransportKeyStore:
    """The transport keys in the key-store Redis.

    Args:
        redis: Client of the key-store Redis (bytes responses).
        master: The master key the store is wrapped under.
        prefix: The key store's prefix.
        rng: Randomness for new keys (injectable for tests).
    """

    def __init__(
        self, redis: Redis, master: MasterKey, *, prefix: str, rng: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.redis = redis
        self.master = master
        self.hash_key = f"{prefix}transport"
        self.meta_key = f"{prefix}meta"
        self._rng = rng
        self._add = redis.register_script(_ADD)
        self._retire = redis.register_script(_RETIRE)

    async def current(self) -> tuple[TransportPrivateKey, bool]:
        """The current transport key, and whether this call created it (first use).

        Raises:
            KeyServiceUnavailable: Redis does not answer, or a master-key rewrap is in progress.
            KeyUnwrapError: the stored key fails its integrity check.
        """
        cur = await self._call(self.redis.hget(self.hash_key, "cur"))
        if cur is not None:
            key_id = cur.decode()
            wrapped = await self._call(self.redis.hget(self.hash_key, f"k:{key_id}"))
            return self._open(key_id, wrapped), False
        fresh = TransportPrivateKey.generate(self._rng)
        reply = await self._script(self._add, "first", fresh)
        if reply[0] == scripts.Reply.FOUND:
            return self._open(reply[1].decode(), reply[2]), False
        return fresh, True

    async def rotate(self) -> TransportPrivateKey:
        """Add a new transport key and make it current; older keys still open until retired.

        Raises:
            KeyServiceUnavailable: Redis does not answer, or a master-key rewrap is in progress.
        """
        fresh = TransportPrivateKey.generate(self._rng)
        await self._script(self._add, "rotate", fresh)
        return fresh

    async def live(self) -> list[TransportPrivateKey]:
        """Every transport key not yet retired, the current one first (creating the first on first use).

        Raises:
            KeyServiceUnavailable: Redis does not answer.
            KeyUnwrapError: a stored key fails its integrity check.
        """
        current, _ = await self.current()
        fields: dict[bytes, bytes] = await self._call(self.redis.hgetall(self.hash_key))
        others = [
            self._open(name[2:].decode(), wrapped)
            for name, wrapped in sorted(fields.items())
            if name.startswith(b"k:") and name[2:].decode() != current.key_id
        ]
        return [current, *others]

    async def retire(self, key_id: str, *, now: datetime | None = None) -> Retired:
        """Destroy a transport key that is not the current one (idempotent for a retired key).

        Raises:
            TransportKeyCurrent: it is the current key.
            TransportKeyUnknown: no key has this id.
            KeyServiceUnavailable: Redis does not answer.
        """
        when = rfc3339(now or datetime.now(UTC))
        try:
            reply = await self._retire(keys=[self.hash_key], args=[key_id, when])
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        if reply[0] == RetireReply.CURRENT:
            raise TransportKeyCurrent("this is the current transport key: rotate first, then retire it")
        if reply[0] == RetireReply.UNKNOWN:
            raise TransportKeyUnknown("no transport key has this id")
        return Retired(key_id, reply[1].decode())

    async def _script(self, script: Any, mode: str, key: TransportPrivateKey) -> Any:
        wrapped = self.master.wrap_transport_key(key.key_id, b"".join(key.export_private_parts()))
        return await scripts.run(
            script, [self.meta_key, self.hash_key], [self.master.key_id_hex, mode, key.key_id, wrapped]
        )

    async def _call(self, pending: Any) -> Any:
        try:
            return await pending
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None

    def _open(self, key_id: str, wrapped: bytes | None) -> TransportPrivateKey:
        if wrapped is None:
            raise KeyUnwrapError()  # `cur` names a key whose parts are gone: the store was tampered with
        if not self.master.owns(wrapped):
            raise KeyServiceUnavailable(
                "stored transport key is wrapped under another master key; restart with the current one"
            )
        parts = self.master.unwrap_transport_key(key_id, wrapped)
        return TransportPrivateKey(key_id, parts[:MLKEM768_SEED_BYTES], parts[MLKEM768_SEED_BYTES:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class TransportKeyService:
    """What the transport-key routes do: plain async functions over verified input, audited.

    Args:
        service: The key service (its store's Redis, master key and prefix, its audit log and clock).
        rng: Randomness for new keys (injectable for tests).
    """

    def __init__(
        self,
        service: KeyService,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        public_cache_s: float = PUBLIC_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service = service
        self.store = TransportKeyStore(
            service.store.redis, service.store.master, prefix=service.store.prefix, rng=rng
        )
        # The public key answers anyone without a token: kept a moment, so that a flood of requests
        # costs one store read (and one unwrap) a second rather than one each.
        self._public_cache_s = public_cache_s
        self._clock = clock
        self._public: tuple[float, TransportPublicKeyAnswer] | None = None

    def _record(self, caller: str | None, action: str, key_ids: list[str], request_id: str) -> AuditRecord:
        return AuditRecord(
            time=rfc3339(datetime.now(UTC)),
            caller=caller,
            action=action,
            user_ids=[],
            versions=[],
            outcome=Outcome.GRANTED,
            request_id=request_id,
            key_ids=key_ids,
        )

    async def public_key(self, request_id: str) -> TransportPublicKeyAnswer:
        """`GET /v1/transport/key`: the current public key, created on first use (that is audited).

        Raises:
            KeyServiceUnavailable: the store or audit log is unavailable.
        """
        now = self._clock()
        if self._public is not None and now - self._public[0] < self._public_cache_s:
            return self._public[1]
        key, created = await self.store.current()
        if created:
            await self._service.audit.append_many(
                [self._record(None, "transport_create", [key.key_id], request_id)]
            )
            log.info("created the first transport key %s (request %s)", key.key_id, request_id)
        mlkem768, x25519 = key.public_key.public_parts()
        answer = TransportPublicKeyAnswer(
            key_id=key.key_id, suite=SUITE_NAME, mlkem768=_b64(mlkem768), x25519=_b64(x25519)
        )
        self._public = (now, answer)
        return answer

    async def open_keys(self, caller: VerifiedCaller, request_id: str) -> TransportPrivateKeysAnswer:
        """`POST /v1/transport/keys/open`: the private parts of every key not yet retired.

        Raises:
            KeyServiceUnavailable: the store or audit log is unavailable.
            KeyUnwrapError: a stored key fails its integrity check.
        """
        keys = await self.store.live()
        ids = [k.key_id for k in keys]
        await self._service.audit.append_many(
            [self._record(caller.caller_id, "transport_open", ids, request_id)]
        )
        self._service.metrics.grants.labels("transport_open").inc(len(keys))
        answer = []
        for key in keys:
            seed, x25519 = key.export_private_parts()
            answer.append(PrivateParts(key_id=key.key_id, mlkem768_seed=_b64(seed), x25519=_b64(x25519)))
        return TransportPrivateKeysAnswer(keys=answer)

    async def rotate(self, caller: VerifiedCaller, request_id: str) -> TransportRotateAnswer:
        """`POST /v1/transport/rotate`: a new current transport key.

        Raises:
            KeyServiceUnavailable: the store or audit log is unavailable.
        """
        key = await self.store.rotate()
        self._public = None  # this process answers with the new key at once
        await self._service.audit.append_many(
            [self._record(caller.caller_id, "transport_rotate", [key.key_id], request_id)]
        )
        log.info("rotated the transport key: %s is current (request %s)", key.key_id, request_id)
        return TransportRotateAnswer(key_id=key.key_id)

    async def retire(self, caller: VerifiedCaller, key_id: str, request_id: str) -> TransportRetireAnswer:
        """`DELETE /v1/transport/keys/{key_id}`: destroy a transport key that is not current.

        Raises:
            TransportKeyCurrent: it is the current key.
            TransportKeyUnknown: no key has this id.
            KeyServiceUnavailable: the store or audit log is unavailable.
        """
        retired = await self.store.retire(key_id)
        await self._service.audit.append_many(
            [self._record(caller.caller_id, "transport_retire", [key_id], request_id)]
        )
        log.info("retired transport key %s (request %s)", key_id, request_id)
        return TransportRetireAnswer(key_id=retired.key_id, retired_at=retired.retired_at)


async def rewrap_transport_keys(redis: Redis, old: MasterKey, new: MasterKey, *, prefix: str) -> int:
    """Re-wrap every transport key of the store at `prefix` from `old` to `new` (part of a master-key
    rewrap, keyservice/rewrap.py); keys already under `new` are skipped, so it is safe to run again.

    Returns:
        How many keys were re-wrapped.

    Raises:
        KeyUnwrapError: a stored transport key opens under neither master key.
        RedisError: Redis does not answer (the rewrap reports it).
    """
    hash_key = f"{prefix}transport"
    fields: dict[Any, Any] = await redis.hgetall(hash_key)
    args: list[Any] = []
    for name, wrapped in fields.items():
        if not name.startswith(b"k:") or new.owns(wrapped):
            continue
        if not old.owns(wrapped):
            raise KeyUnwrapError("a stored transport key is wrapped under neither master key")
        key_id = name[2:].decode()
        args += [name, wrapped, new.wrap_transport_key(key_id, old.unwrap_transport_key(key_id, wrapped))]
    if not args:
        return 0
    cas = redis.register_script(scripts.REWRAP_CAS)
    return int(await cas(keys=[hash_key] * (len(args) // 3), args=args))
