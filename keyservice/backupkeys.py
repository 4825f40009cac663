"""Backup keys: the keys `pulseseal keys backup` wraps data keys under, each destroyed after the retention.

A backup holds its users' data keys wrapped under a *backup key*, not the master key. Backup keys rest in
the key-store Redis (hash `<prefix>backup-keys`, one field per UTC day), wrapped under the master key; every
backup taken on one day uses that day's key. A day's key is destroyed `PULSESEAL_BACKUP_RETENTION_DAYS`
after the end of its day (its `unreadable_after`), by the key service's sweep (every minute, and at start),
by `pulseseal keys backup|restore`, and the key store's append-only file is rewritten afterwards (see
compaction.py), so from then on no backup of that day can yield a key, even with the master key. A shred's
`backups_unreadable_after` is the latest `unreadable_after` of the backup keys that exist at the shred:
every backup taken before the shred is under one of them.

The clock is injectable everywhere (`now=`), so tests can step past a retention without waiting.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable, KeyUnwrapError
from keyservice.wrapping import MasterKey, new_data_key
from schemas.rfc3339 import format_rfc3339, parse_rfc3339

log = logging.getLogger(__name__)
# Backup keys are wrapped with the data-key recipe under an id no user can have ('#' is not allowed in a
# user id, contract §3), at version 0 (user versions start at 1).
_WRAP_ID = "#backup-key:"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BackupExpired(KeyServiceError):
    """A backup's key was destroyed: its retention is over, and it can never be restored."""

    default_reason = "backup_expired"
    title = "Backup expired"


@dataclass(frozen=True, slots=True)
class BackupKey:
    """One day's backup key (a handle: the key's bytes are inside `key`, never an attribute)."""

    key_id: str
    key: MasterKey
    unreadable_after: datetime


def _day(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def unreadable_after_of(day: str, retention_days: int) -> datetime:
    """When the key of `day` (YYYY-MM-DD, UTC) is destroyed: the end of that day plus the retention."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return start + timedelta(days=1 + retention_days)


class BackupKeyring:
    """The backup keys of one key store.

    Args:
        redis: The key-store Redis.
        prefix: The key store's prefix.
        master: The master key the backup keys are wrapped under.
        retention_days: How long a backup stays restorable at least (`PULSESEAL_BACKUP_RETENTION_DAYS`).
    """

    def __init__(self, redis: Redis, prefix: str, master: MasterKey, retention_days: int) -> None:
        self._redis = redis
        self.key = f"{prefix}backup-keys"
        self._master = master
        self.retention_days = retention_days

    async def _all(self) -> dict[str, dict[str, Any]]:
        try:
            raw = await self._redis.hgetall(self.key)
        except RedisError:
            raise KeyServiceUnavailable("the key store does not answer") from None
        found = {}
        for day, value in raw.items():
            try:
                found[_text(day)] = json.loads(value)
            except ValueError:
                raise KeyServiceUnavailable("a backup key in the key store is malformed") from None
        return found

    async def for_backup(self, now: datetime) -> BackupKey:
        """Today's backup key, created on first use (exactly once across processes).

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        day = _day(now)
        deadline = unreadable_after_of(day, self.retention_days)
        material = new_data_key()
        record = {
            "wrapped": base64.b64encode(self._master.wrap(_WRAP_ID + day, 0, material)).decode("ascii"),
            "unreadable_after": format_rfc3339(deadline),
        }
        try:
            await self._redis.hsetnx(self.key, day, json.dumps(record, separators=(",", ":")))
        except RedisError:
            raise KeyServiceUnavailable("the key store does not answer") from None
        return await self.for_restore(day, now)

    async def for_restore(self, key_id: str, now: datetime) -> BackupKey:
        """The backup key `key_id`, if it still exists and its retention is not over.

        Raises:
            BackupExpired: it was destroyed, or its `unreadable_after` has passed.
            KeyServiceUnavailable: Redis does not answer, or the key does not open under the master key.
        """
        try:
            raw = await self._redis.hget(self.key, key_id)
        except RedisError:
            raise KeyServiceUnavailable("the key store does not answer") from None
        if raw is None:
            raise BackupExpired(f"its backup key ({key_id}) was destroyed when its retention ended")
        try:
            record = json.loads(raw)
            deadline = parse_rfc3339(record["unreadable_after"])
            wrapped = base64.b64decode(record["wrapped"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise KeyServiceUnavailable("a backup key in the key store is malformed") from None
        if deadline <= now:
            raise BackupExpired(
                f"its retention ended at {format_rfc3339(deadline)} (backup key {key_id} is destroyed)"
            )
        try:
            material = self._master.unwrap(_WRAP_ID + key_id, 0, wrapped)
        except KeyUnwrapError:
            raise KeyServiceUnavailable(
                "the backup key does not open under the configured master key"
            ) from None
        return BackupKey(key_id, MasterKey(material), deadline)

    async def sweep(self, now: datetime) -> list[str]:
        """Destroy every backup key whose retention is over; returns their ids (the caller rewrites the
        key store's append-only file when any was destroyed).

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        expired = [
            day
            for day, record in (await self._all()).items()
            if parse_rfc3339(str(record.get("unreadable_after", ""))) <= now
        ]
        if expired:
            try:
                await self._redis.hdel(self.key, *expired)
            except RedisError:
                raise KeyServiceUnavailable("the key store does not answer") from None
            log.info(
                "destroyed %d backup keys whose retention ended: %s", len(expired), ", ".join(sorted(expired))
            )
        return expired

    async def unreadable_after(self, now: datetime) -> str:
        """When every backup taken so far is unreadable (RFC 3339): the latest deadline of the backup keys
        that exist; `now` (the shred's time) when there are none (no backup can yield anything).

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        deadlines = [parse_rfc3339(str(r.get("unreadable_after", ""))) for r in (await self._all()).values()]
        return format_rfc3339(max([now, *deadlines]))
