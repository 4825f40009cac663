"""Erasure on disk: rewrite the key store's append-only file after destroying keys, many shreds per rewrite.

Redis's AOF only appends: the `HDEL` of a shred is written after the `HSET` that created the key, and the
old bytes stay in the file (a Redis 7 multi-part AOF: a base file plus incremental files under
`appendonlydir/`). `BGREWRITEAOF` forks, writes a new base file from memory (where the destroyed keys no
longer are), and then deletes the older base and incremental files. So a destroyed key has left the key
store's files once a rewrite that *started after its deletion* has finished successfully.

`RewriteGate` makes shreds share rewrites: a shred that arrives while no rewrite is pending asks for the
next one; shreds arriving while that one has not started yet join it; shreds arriving while it runs join
the one after. A shred of 1000 users at once takes two or three rewrites, not 1000.

A rewrite someone else started (another key-service replica, Redis's own `auto-aof-rewrite`) may have
forked before our deletion, so it never counts for us: we wait for it and then ask for our own.
Redis answers `BGREWRITEAOF` with "scheduled" while a snapshot child runs; a scheduled rewrite forks
later, so it counts.

RDB snapshots (`dump.rdb`) would keep destroyed keys for good; `check_no_snapshots` turns them off at
start-up (or refuses to start where it cannot) and removes a snapshot file left behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from keyservice.wire.errors import KeyServiceUnavailable, StartupRefused

log = logging.getLogger(__name__)

_POLL_S = 0.005
_POLL_MAX_S = 0.05


class RewriteFailed(KeyServiceUnavailable):
    """The key store's append-only file could not be rewritten: destroyed keys may still be in its files."""

    default_reason = "rewrite_failed"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class AofRewriter:
    """One complete `BGREWRITEAOF` that forks after the call began, waited for until it has finished.

    Args:
        redis: The key-store Redis.
        timeout_s: How long one rewrite may take (a key store of 1M users rewrites in a few seconds).
        sleep: Injectable for tests.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        timeout_s: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._redis = redis
        self._timeout_s = timeout_s
        self._sleep = sleep
        self.rewrites = 0  # rewrites this process asked for (the benchmark and tests read it)

    async def _persistence(self) -> dict[str, Any]:
        info: dict[str, Any] = await self._redis.info("persistence")
        return info

    async def _idle(self, deadline: float) -> dict[str, Any]:
        """Wait until no rewrite runs or is scheduled; return INFO persistence at that moment."""
        delay = _POLL_S
        while True:
            info = await self._persistence()
            if not int(info.get("aof_rewrite_in_progress", 0)) and not int(
                info.get("aof_rewrite_scheduled", 0)
            ):
                return info
            if time.monotonic() > deadline:
                raise RewriteFailed("the key store's append-only file rewrite did not finish in time")
            await self._sleep(delay)
            delay = min(_POLL_MAX_S, delay * 2)

    async def rewrite(self) -> None:
        """Rewrite the AOF and return once the rewrite is complete (old AOF files deleted by Redis).

        Raises:
            RewriteFailed: Redis refused or failed the rewrite, or it took longer than the timeout.
        """
        deadline = time.monotonic() + self._timeout_s
        try:
            if not int((await self._persistence()).get("aof_enabled", 0)):
                return  # a volatile store (--allow-volatile-keystore) writes no AOF to rewrite
            for _ in range(5):
                await self._idle(deadline)
                try:
                    reply = _text(await self._redis.bgrewriteaof())
                except ResponseError as exc:
                    if "already in progress" in str(exc):
                        continue  # forked before our deletion maybe: wait for it, then ask again
                    raise RewriteFailed(
                        f"the key store refused to rewrite its append-only file ({exc})"
                    ) from None
                self.rewrites += 1
                log.debug("AOF rewrite: %s", reply)
                info = await self._idle(deadline)
                if _text(info.get("aof_last_bgrewrite_status", "")) == "ok":
                    return
                log.error("the key store's append-only file rewrite failed (see the Redis log); trying again")
        except RedisError:
            raise RewriteFailed(
                "the key store stopped answering during an append-only file rewrite"
            ) from None
        raise RewriteFailed("the key store's append-only file rewrite kept failing; see the Redis log")


class RewriteGate:
    """Coalesces rewrite requests: every caller returns after a rewrite that began after it called.

    Args:
        rewriter: What one rewrite is (an `AofRewriter`, or anything with `async rewrite()`).
    """

    def __init__(self, rewriter: AofRewriter) -> None:
        self._rewriter = rewriter
        self._pending: asyncio.Future[None] | None = None  # the round not yet started; callers join it
        self._runner: asyncio.Task[None] | None = None

    async def rewrite(self) -> None:
        """Wait for a complete rewrite that starts after this call.

        Raises:
            RewriteFailed: that rewrite failed (every caller that joined it gets the error).
        """
        if self._pending is None:
            self._pending = asyncio.get_running_loop().create_future()
        joined = self._pending
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # shield: a caller that goes away (client disconnected) must not cancel the round others wait for.
        await asyncio.shield(joined)

    async def _run(self) -> None:
        while self._pending is not None:
            current, self._pending = self._pending, None  # later callers start the next round
            try:
                await self._rewriter.rewrite()
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this round
                current.set_exception(exc)
                current.exception()  # retrieved: a round whose callers all left must not warn
            else:
                current.set_result(None)


async def check_no_snapshots(redis: Redis, where: str) -> None:
    """Make sure the key store takes no RDB snapshots, and remove a snapshot file it left behind.

    A `save` schedule is switched off (`CONFIG SET save ""`, logged); a Redis that will not say or not
    change its configuration is refused, as is one that keeps snapshotting.

    Raises:
        StartupRefused: snapshots cannot be ruled out.
    """
    try:
        reply = await redis.config_get("save")
        save = next((_text(v) for k, v in reply.items() if _text(k) == "save"), None)
        if save is None:
            raise StartupRefused(
                f"key-store Redis at {where} does not show its `save` setting (CONFIG disabled?): erasure on "
                'disk needs RDB snapshots off (save ""), which cannot be checked'
            )
        if save.strip():
            await redis.config_set("save", "")
            log.warning(
                "key store %s had RDB snapshots on (save %s): switched them off, since a snapshot keeps "
                'destroyed keys (contract §6); start it with save "" (infra/redis.sh does)',
                where,
                save,
            )
        names = await redis.config_get("dir")
        files = await redis.config_get("dbfilename")
    except ResponseError:
        raise StartupRefused(
            f'key-store Redis at {where} refuses CONFIG: erasure on disk needs RDB snapshots off (save "")'
        ) from None
    except RedisError:
        raise StartupRefused(f"key-store Redis at {where} is not answering") from None
    directory = next((_text(v) for k, v in names.items() if _text(k) == "dir"), "")
    filename = next((_text(v) for k, v in files.items() if _text(k) == "dbfilename"), "dump.rdb")
    snapshot = Path(directory) / filename
    try:
        if directory and snapshot.is_file():
            snapshot.unlink()
            log.warning("removed the key store's old RDB snapshot %s (it may hold destroyed keys)", snapshot)
    except OSError as exc:
        raise StartupRefused(
            f"the key store's old RDB snapshot {snapshot} cannot be removed ({exc.strerror}): remove it, "
            "since it may hold destroyed keys"
        ) from None
