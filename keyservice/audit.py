"""The audit log: every grant and refusal, appended to a Redis stream on the key store's AOF Redis.

The stream lives beside the keys so that a record is exactly as durable as the grant it records; a grant
whose record cannot be written is not handed out (the request fails with 503).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice.wire.audit import AuditRecord
from keyservice.wire.errors import KeyServiceUnavailable

MAX_RECORDS = 10_000


class AuditLog:
    """Append and query audit records.

    Args:
        redis: The key-store Redis (AOF on).
        prefix: Key prefix of this key store.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._key = f"{prefix}audit"

    async def append(self, record: AuditRecord) -> None:
        """Append one record.

        Raises:
            KeyServiceUnavailable: the record could not be written.
        """
        payload = json.dumps(record.to_json(), separators=(",", ":"))
        try:
            await self._redis.xadd(self._key, {b"r": payload.encode()})
        except RedisError:
            raise KeyServiceUnavailable("audit log unavailable") from None

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        """Append records in one round trip.

        Raises:
            KeyServiceUnavailable: the records could not be written.
        """
        if not records:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for record in records:
                    pipe.xadd(self._key, {b"r": json.dumps(record.to_json(), separators=(",", ":")).encode()})
                await pipe.execute()
        except RedisError:
            raise KeyServiceUnavailable("audit log unavailable") from None

    async def query(
        self, *, user_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """Records in time order, optionally only those naming `user_id` and at or after `since`.

        Raises:
            KeyServiceUnavailable: the stream cannot be read.
        """
        start = f"{int(since.timestamp() * 1000)}-0" if since else "-"
        found: list[AuditRecord] = []
        try:
            while len(found) < limit:
                page: Any = await self._redis.xrange(self._key, min=start, max="+", count=1000)
                for _entry_id, fields in page:
                    record = AuditRecord(**json.loads(fields[b"r"]))
                    if user_id is None or user_id in record.user_ids:
                        found.append(record)
                if len(page) < 1000:
                    break
                start = "(" + page[-1][0].decode()
        except RedisError:
            raise KeyServiceUnavailable("audit log unavailable") from None
        return found[:limit]
