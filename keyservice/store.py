"""The key store: per-user data keys in the key-store Redis, wrapped under the master key.

Every operation is one Lua script call (scripts.py) so that first use creates version 1 exactly once, a
rotation or shred races nothing, and a request for 1000 users is two round trips at most (read, then
create only the misses). Unwrapping happens here, in the key service's process, and nowhere else.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from keyservice import scripts
from keyservice.ledger import UserFloor
from keyservice.scripts import Reply
from keyservice.wire.errors import (
    KeyServiceUnavailable,
    KeyShredded,
    KeyUnwrapError,
    StartupRefused,
    UserNotShredded,
)
from keyservice.wire.models import MissingReason
from keyservice.wrapping import MasterKey, new_data_key
from schemas.rfc3339 import format_rfc3339 as rfc3339

_RETRIES = 8
_REAPPLY_BATCH = 500


class PlainKey:
    """A data key inside the key service's process, on its way into one response; never printed."""

    __slots__ = ("_material", "user_id", "version")

    def __init__(self, user_id: str, version: int, material: bytes) -> None:
        self.user_id = user_id
        self.version = version
        self._material = material

    def b64(self) -> str:
        """The key as standard base64 with padding, as the API sends it."""
        return base64.b64encode(self._material).decode("ascii")

    def __repr__(self) -> str:
        return f"PlainKey(user_id={self.user_id!r}, version={self.version})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PlainKey cannot be pickled")


@dataclass(frozen=True, slots=True)
class VersionLookup:
    """Keys found for a decrypt, the ones missing with why (`shredded` or `unknown`), and when each
    shredded one was destroyed (RFC 3339; absent when the store has no date for it)."""

    found: list[PlainKey]
    missing: list[tuple[str, int, str]]
    destroyed_at: dict[tuple[str, int], str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Shredded:
    """What a shred destroyed."""

    versions: tuple[int, ...]
    max_destroyed: int


@dataclass(frozen=True, slots=True)
class MetaState:
    """The store's master-key metadata."""

    key_id: str
    check_value: str
    rewrap_to: str
    rewrap_check: str


class KeyStore:
    """Data keys of every user in one key-store Redis.

    Args:
        redis: Client of the key-store Redis (bytes responses).
        master: The master key the store is wrapped under.
        prefix: Prefix of every Redis key this store uses (tests use a unique one).
        rng: Source of new data keys.
    """

    def __init__(
        self, redis: Redis, master: MasterKey, *, prefix: str, rng: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.redis = redis
        self.master = master
        self.prefix = prefix
        self._rng = rng
        self.meta_key = f"{prefix}meta"
        self._read_current = redis.register_script(scripts.READ_CURRENT)
        self._create = redis.register_script(scripts.CREATE)
        self._next_version = redis.register_script(scripts.NEXT_VERSION)
        self._shred = redis.register_script(scripts.SHRED)
        self._read_versions = redis.register_script(scripts.READ_VERSIONS)
        self._reapply = redis.register_script(scripts.REAPPLY)
        self._claim_meta = redis.register_script(scripts.CLAIM_META)

    def user_key(self, user_id: str) -> str:
        """The Redis hash holding one user's keys."""
        return f"{self.prefix}u:{user_id}"

    async def _run(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return await scripts.run(script, keys, args)

    def _open(self, user_id: str, version: int, wrapped: bytes) -> PlainKey:
        if not self.master.owns(wrapped):
            raise KeyServiceUnavailable(
                "stored key is wrapped under another master key; restart with the current master key"
            )
        return PlainKey(user_id, version, self.master.unwrap(user_id, version, wrapped))

    async def claim_master(self) -> MetaState:
        """Claim an empty store for this master key, or read the master key the store is wrapped under.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        key_id, check, to, to_check = await self._run(
            self._claim_meta, [self.meta_key], [self.master.key_id_hex, self.master.check_value]
        )
        return MetaState(key_id.decode(), check.decode(), to.decode(), to_check.decode())

    async def check_master(self) -> None:
        """Refuse a master key that does not match the store, or a store in the middle of a rewrap.

        Raises:
            StartupRefused: mismatch or rewrap in progress.
            KeyServiceUnavailable: Redis does not answer.
        """
        meta = await self.claim_master()
        if meta.rewrap_to:
            raise StartupRefused(
                "a master-key rewrap is in progress on this key store; finish it with "
                "`pulseseal keys rewrap --new-master-key FILE` (safe to re-run), then start with the new key"
            )
        if meta.check_value != self.master.check_value:
            raise StartupRefused(
                "the master key does not match the key store (check value differs): start with the master "
                "key this store was created with"
            )

    async def current_keys(self, user_ids: Sequence[str]) -> tuple[list[PlainKey], list[str]]:
        """The current key of each user, creating version 1 (or the next after `floor`) on first use.

        Returns:
            The keys, in the order of `user_ids`, and the users refused because they are shredded.

        Raises:
            KeyServiceUnavailable: Redis does not answer, or the store is wrapped under another master key.
            KeyUnwrapError: a stored key fails its integrity check.
        """
        replies = await self._run(self._read_current, [self.user_key(u) for u in user_ids], ())
        found: dict[str, PlainKey] = {}
        shredded: list[str] = []
        misses: dict[str, int] = {}
        for user_id, reply in zip(user_ids, replies, strict=True):
            self._sort_current(user_id, reply, found, shredded, misses)
        for _ in range(_RETRIES):
            if not misses:
                break
            misses = await self._create_missing(misses, found, shredded)
        else:
            raise KeyServiceUnavailable("key creation kept racing; try again")
        return [found[u] for u in user_ids if u in found], shredded

    async def _create_missing(
        self, misses: Mapping[str, int], found: dict[str, PlainKey], shredded: list[str]
    ) -> dict[str, int]:
        users = list(misses)
        fresh = {u: PlainKey(u, misses[u] + 1, new_data_key(self._rng)) for u in users}
        args: list[Any] = [self.master.key_id_hex]
        for user_id in users:
            key = fresh[user_id]
            args += [key.version, self.master.wrap(user_id, key.version, key._material)]
        replies = await self._run(self._create, [self.meta_key, *map(self.user_key, users)], args)
        retry: dict[str, int] = {}
        for user_id, reply in zip(users, replies, strict=True):
            if Reply(reply[0]) is Reply.STORED:
                found[user_id] = fresh[user_id]
            else:
                self._sort_current(user_id, reply, found, shredded, retry)
        return retry

    def _sort_current(
        self,
        user_id: str,
        reply: Sequence[Any],
        found: dict[str, PlainKey],
        shredded: list[str],
        misses: dict[str, int],
    ) -> None:
        # A READ_CURRENT or CREATE reply: the current key, shredded, or a miss at the floor given.
        status = Reply(reply[0])
        if status is Reply.FOUND:
            found[user_id] = self._open(user_id, reply[1], _wrapped(reply))
        elif status is Reply.SHREDDED:
            shredded.append(user_id)
        else:
            misses[user_id] = reply[1]

    async def keys_at(self, refs: Sequence[tuple[str, int]]) -> VersionLookup:
        """Given versions of given users (for decryption); never creates a key.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
            KeyUnwrapError: a stored key fails its integrity check.
        """
        replies = await self._run(
            self._read_versions, [self.user_key(u) for u, _ in refs], [v for _, v in refs]
        )
        found: list[PlainKey] = []
        missing: list[tuple[str, int, str]] = []
        destroyed_at: dict[tuple[str, int], str] = {}
        for (user_id, version), reply in zip(refs, replies, strict=True):
            status = Reply(reply[0])
            if status is Reply.FOUND:
                found.append(self._open(user_id, version, reply[1]))
            elif status is Reply.SHREDDED:
                missing.append((user_id, version, MissingReason.SHREDDED))
                if len(reply) > 1 and isinstance(reply[1], bytes):
                    destroyed_at[(user_id, version)] = reply[1].decode()
            else:
                missing.append((user_id, version, MissingReason.UNKNOWN))
        return VersionLookup(found, missing, destroyed_at)

    async def state(self, user_id: str) -> tuple[int, int, bool]:
        """`(current version or 0, floor, shredded)` of one user.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        try:
            cur, floor, shredded = await self.redis.hmget(
                self.user_key(user_id), ["cur", "floor", "shredded"]
            )
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        return int(cur or 0), int(floor or 0), shredded is not None

    async def rotate(self, user_id: str) -> int:
        """Add a version and make it current; old versions still decrypt.

        Raises:
            KeyShredded: the user is shredded.
            KeyServiceUnavailable: Redis does not answer, or a rewrap is in progress.
        """
        cur, floor, shredded = await self.state(user_id)
        if shredded:
            raise KeyShredded("user is shredded; reinstate them first")
        return await self._add_version(user_id, "rotate", max(cur, floor) + 1)

    async def reinstate(self, user_id: str, version: int) -> int:
        """Let a shredded user have keys again, at `version` (above every destroyed one) or higher.

        Raises:
            UserNotShredded: the user is not shredded.
            KeyServiceUnavailable: Redis does not answer, or a rewrap is in progress.
        """
        return await self._add_version(user_id, "reinstate", version)

    async def _add_version(self, user_id: str, mode: str, version: int) -> int:
        for _ in range(_RETRIES):
            material = new_data_key(self._rng)
            wrapped = self.master.wrap(user_id, version, material)
            args = [self.master.key_id_hex, mode, version, wrapped]
            reply = await self._run(self._next_version, [self.meta_key, self.user_key(user_id)], args)
            status = Reply(reply[0])
            if status is Reply.STORED:
                return int(reply[1])
            if status is Reply.SHREDDED:
                raise KeyShredded("user is shredded; reinstate them first")
            if status is Reply.NOT_SHREDDED:
                raise UserNotShredded("user is not shredded")
            version = int(reply[1])
        raise KeyServiceUnavailable("key version kept racing; try again")

    async def shred(self, user_id: str, *, at: str | None = None) -> Shredded:
        """Destroy every version of the user and mark them shredded (idempotent).

        Args:
            user_id: The user.
            at: When (RFC 3339), kept per destroyed version for decrypt answers; default the clock.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        when = at if at is not None else rfc3339(datetime.now(UTC))
        top, destroyed = await self._run(self._shred, [self.user_key(user_id)], (when,))
        return Shredded(tuple(sorted(int(v) for v in destroyed)), int(top))

    async def reapply(self, floors: Mapping[str, UserFloor]) -> tuple[int, int]:
        """Make the store agree with the shred ledger (destroy again what a restored backup brought back).

        Returns:
            `(versions destroyed again, users shredded again)`.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        users = list(floors)
        destroyed = reshredded = 0
        for start in range(0, len(users), _REAPPLY_BATCH):
            batch = users[start : start + _REAPPLY_BATCH]
            args: list[Any] = []
            for user_id in batch:
                floor = floors[user_id]
                args += [floor.max_destroyed, 1 if floor.shredded else 0, floor.reinstated_version]
            d, r = await self._run(self._reapply, [self.user_key(u) for u in batch], args)
            destroyed += int(d)
            reshredded += int(r)
        return destroyed, reshredded

    async def durability(self) -> bool:
        """True when the Redis has AOF persistence on.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        try:
            info = await self.redis.info("persistence")
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        return bool(int(info.get("aof_enabled", 0)))

    async def fsync_policy(self) -> str | None:
        """The key-store Redis's `appendfsync` (`always`, `everysec`, `no`), or None if it will not say
        (CONFIG disabled, as some managed offerings do).

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        try:
            reply = await self.redis.config_get("appendfsync")
        except ResponseError:
            return None
        except RedisError:
            raise KeyServiceUnavailable("key store unavailable") from None
        for name, value in reply.items():
            if _text(name) == "appendfsync":
                return _text(value)
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _wrapped(reply: Sequence[Any]) -> bytes:
    # A `cur` whose wrapped key is missing breaks the store's invariant: treat it like tampering.
    if len(reply) < 3 or not isinstance(reply[2], bytes):
        raise KeyUnwrapError()
    return reply[2]
