"""What makes a shred hold beyond the key store's memory (contract §6, "Erasure holds on disk").

After the store has destroyed a user's keys and the ledger has recorded it, before the answer leaves:
1. the shred notice goes out, so every encryptor drops the user's keys from its cache within a second
   (shrednotices.py, keyservice/client/shreds.py);
2. the key store's append-only file is rewritten, sharing the rewrite with every shred in flight
   (compaction.py), so no file under the key store's data directory holds a destroyed key;
3. the receipt learns `backups_unreadable_after`: when the last backup key that could have wrapped the
   user's keys in a backup is destroyed (backupkeys.py).
And in the background, every `sweep_interval_s`, backup keys whose retention ended are destroyed (and the
append-only file rewritten after them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from redis.asyncio import Redis

from keyservice.backupkeys import BackupKeyring
from keyservice.compaction import AofRewriter, RewriteGate
from keyservice.shrednotices import ShredNotices
from keyservice.store import KeyStore
from keyservice.wire.errors import KeyServiceError
from schemas.rfc3339 import parse_rfc3339

log = logging.getLogger(__name__)

DEFAULT_RETENTION_DAYS = 30


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Erasure:
    """The erasure steps of one key service.

    Args:
        gate: Shared AOF rewrites.
        notices: The shred notice stream.
        keyring: The backup keys.
        now: The clock (backup-key deadlines).
        sweep_interval_s: How often expired backup keys are destroyed.
    """

    def __init__(
        self,
        gate: RewriteGate,
        notices: ShredNotices,
        keyring: BackupKeyring,
        *,
        now: Callable[[], datetime] = _utcnow,
        sweep_interval_s: float = 60.0,
    ) -> None:
        self.gate = gate
        self.notices = notices
        self.keyring = keyring
        self._now = now
        self._interval = sweep_interval_s
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def for_store(
        cls,
        redis: Redis,
        store: KeyStore,
        *,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        now: Callable[[], datetime] = _utcnow,
        stream_redis: Redis | None = None,
    ) -> Erasure:
        """The erasure steps over `store`'s Redis and prefix (the shred streams' readers on `stream_redis`,
        a client of the same Redis that this object then owns and closes)."""
        return cls(
            RewriteGate(AofRewriter(redis)),
            ShredNotices(redis, store.prefix, readers=stream_redis),
            BackupKeyring(redis, store.prefix, store.master, retention_days),
            now=now,
        )

    async def after_shred(self, user_id: str, destroyed_at: str) -> str:
        """Announce the shred, wait until it is off the key store's disk; return `backups_unreadable_after`.

        Raises:
            KeyServiceUnavailable: the notice could not be sent, the rewrite failed (`rewrite_failed`), or
                the backup keys cannot be read. The keys are destroyed all the same; repeat the shred to
                get a receipt.
        """
        await self.notices.publish(user_id, destroyed_at)
        await self.gate.rewrite()
        return await self.keyring.unreadable_after(parse_rfc3339(destroyed_at))

    async def sweep(self) -> int:
        """Destroy backup keys whose retention ended, and rewrite the append-only file after them.

        Raises:
            KeyServiceUnavailable: Redis does not answer, or the rewrite failed.
        """
        destroyed = await self.keyring.sweep(self._now())
        if destroyed:
            await self.gate.rewrite()
        return len(destroyed)

    def start(self) -> None:
        """Start the background sweep (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except KeyServiceError as exc:
                log.error("backup-key sweep failed (%s); trying again in %.0f s", exc.reason, self._interval)
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        """End the shred streams and the sweep."""
        self.notices.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.notices.close()
