"""The audit log: every grant and refusal, appended to a Redis stream on the key store's AOF Redis.

The stream lives beside the keys so that a record is exactly as durable as the grant it records; a grant
whose record cannot be written is not handed out (the request fails with 503). Every record is chained
and signed (`auditchain.py`), so an edited, deleted or inserted record is found by
`pulseseal keys audit --verify`.

The stream is capped: once it holds more than `max_records`, the oldest records are first appended to the
archive file (NDJSON under the key service's data, fsynced) and only then trimmed from the stream, so the
key-store Redis (memory and AOF) stays bounded and nothing leaves the audit trail. `XADD MAXLEN` is not
used on purpose: it drops the oldest records without anyone keeping them. Reading the log reads the
archive first, then the stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.asyncio import Redis
from redis.exceptions import RedisError

from keyservice.auditchain import ChainWriter
from keyservice.wire.audit import AuditRecord
from keyservice.wire.errors import KeyServiceUnavailable

log = logging.getLogger(__name__)
MAX_RECORDS = 10_000
#: Appends between two checks of the stream's length.
_CHECK_EVERY = 500


class AuditLog:
    """Append and query audit records.

    Args:
        redis: The key-store Redis (AOF on).
        prefix: Key prefix of this key store.
        signer: The key service's Ed25519 key (signs every record).
        archive: Where records beyond `max_records` go (NDJSON); None keeps every record in the stream.
        max_records: Records the stream keeps at most (between checks it may run a little over).
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        *,
        signer: Ed25519PrivateKey,
        archive: Path | None = None,
        max_records: int = 100_000,
    ) -> None:
        self._redis = redis
        self._key = f"{prefix}audit"
        self._chain = ChainWriter(signer)
        self._archive = archive
        self._max = max_records
        self._appends = 0
        self._archiving = asyncio.Lock()

    @property
    def key(self) -> str:
        """The stream's Redis key."""
        return self._key

    async def append(self, record: AuditRecord) -> None:
        """Append one record.

        Raises:
            KeyServiceUnavailable: the record could not be written.
        """
        await self.append_many([record])

    async def append_many(self, records: Sequence[AuditRecord]) -> None:
        """Append records in one round trip.

        Raises:
            KeyServiceUnavailable: the records could not be written.
        """
        if not records:
            return
        # Links are assigned here, before any await, so the chain's order is the order of the calls.
        entries = []
        for record in records:
            payload = json.dumps(record.to_json(), separators=(",", ":")).encode()
            entries.append({b"r": payload, b"c": self._chain.link(payload)})
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry in entries:
                    pipe.xadd(self._key, entry)  # type: ignore[arg-type]
                await pipe.execute()
        except RedisError:
            self._chain.lost(entry[b"c"] for entry in entries)
            raise KeyServiceUnavailable("audit log unavailable") from None
        self._appends += len(entries)
        if self._archive is not None and self._appends >= _CHECK_EVERY:
            self._appends = 0
            await self.archive_overflow()

    async def archive_overflow(self) -> int:
        """Move the records beyond `max_records` (oldest first) to the archive file; how many moved.

        A failure leaves them in the stream (logged): the trail never loses a record to the cap.
        """
        if self._archive is None or self._archiving.locked():
            return 0
        async with self._archiving:
            try:
                excess = int(await self._redis.xlen(self._key)) - self._max
                moved = 0
                while excess > 0:
                    page: Any = await self._redis.xrange(self._key, min="-", max="+", count=min(excess, 1000))
                    if not page:
                        break
                    await asyncio.to_thread(_append_lines, self._archive, page)
                    last = page[-1][0].decode()
                    ms, seq = last.split("-")
                    await self._redis.xtrim(self._key, minid=f"{ms}-{int(seq) + 1}", approximate=False)
                    moved += len(page)
                    excess -= len(page)
                return moved
            except (RedisError, OSError) as exc:
                log.error(
                    "could not archive old audit records (%s); they stay in the stream", type(exc).__name__
                )
                return 0

    async def query(
        self, *, user_id: str | None = None, since: datetime | None = None, limit: int = 1000
    ) -> list[AuditRecord]:
        """Records in time order (archive, then stream), optionally naming `user_id` and at or after `since`.

        Raises:
            KeyServiceUnavailable: the stream cannot be read.
        """
        found: list[AuditRecord] = []

        def take(payload: bytes) -> None:
            record = AuditRecord(**json.loads(payload))
            if user_id is None or user_id in record.user_ids:
                found.append(record)

        cutoff_ms = int(since.timestamp() * 1000) if since else 0
        for entry_id, payload, _link in archived(self._archive):
            if len(found) >= limit:
                return found
            if int(entry_id.split("-")[0]) >= cutoff_ms:
                take(payload)
        start = f"{cutoff_ms}-0" if since else "-"
        try:
            while len(found) < limit:
                page: Any = await self._redis.xrange(self._key, min=start, max="+", count=1000)
                for _entry_id, fields in page:
                    take(fields[b"r"])
                if len(page) < 1000:
                    break
                start = "(" + page[-1][0].decode()
        except RedisError:
            raise KeyServiceUnavailable("audit log unavailable") from None
        return found[:limit]

    async def entries(self) -> list[tuple[bytes, bytes | None]]:
        """Every record with its chain link, oldest first (archive, then stream), for verification.

        Raises:
            KeyServiceUnavailable: the stream cannot be read.
        """
        out: list[tuple[bytes, bytes | None]] = [(r, c) for _, r, c in archived(self._archive)]
        start = "-"
        try:
            while True:
                page: Any = await self._redis.xrange(self._key, min=start, max="+", count=1000)
                out.extend((fields[b"r"], fields.get(b"c")) for _, fields in page)
                if len(page) < 1000:
                    return out
                start = "(" + page[-1][0].decode()
        except RedisError:
            raise KeyServiceUnavailable("audit log unavailable") from None


def _append_lines(path: Path, page: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    lines = b"".join(
        json.dumps(
            {
                "id": entry_id.decode(),
                "r": fields[b"r"].decode(),
                "c": (fields.get(b"c") or b"").decode() or None,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
        for entry_id, fields in page
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "ab") as out:
        out.write(lines)
        out.flush()
        os.fsync(out.fileno())


def archived(path: Path | None) -> Iterator[tuple[str, bytes, bytes | None]]:
    """`(stream id, record bytes, link bytes or None)` of every archived record, oldest first."""
    if path is None or not path.exists():
        return
    with path.open("rb") as lines:
        for line in lines:
            if not line.strip():
                continue
            item = json.loads(line)
            link = item.get("c")
            yield item["id"], item["r"].encode(), link.encode() if link else None
