"""The benchmark's own corner of the local servers: a RabbitMQ virtual host and MongoDB databases.

Scenarios 3 to 5 publish to and drain the contract's queue names, so they run on a virtual host created
for the run (`bench<random>`, through `infra/rabbitmq.sh ctl`) and write to databases named
`pulseseal_bench_<random>_<n>`; the virtual host and every database are deleted when the run ends, and
a database as soon as the measurement that used it is done. Nothing touches the default virtual host or
the `pulseseal` database, so a running demo or test session on the same servers is left alone.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aio_pika
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError

from bench.harness import BenchContext
from pulseseal import mongo
from pulseseal.ferretdb_sql import postgres_target
from pulseseal.settings import Settings
from pulseseal.topology import DEAD_QUEUE, SEAL_QUEUE, declare_topology
from shell.devservices import rabbitmqctl


class Scratch:
    """The run's virtual host and databases.

    Args:
        settings: Where the servers are (`amqp_url` without a virtual host, `mongo_url`).
        tag: The random part of every name.
    """

    def __init__(self, settings: Settings, tag: str) -> None:
        self.tag = tag
        self.vhost = f"bench{tag}"
        self.amqp_url = settings.amqp_url.rstrip("/") + "/" + self.vhost
        self.mongo_url = settings.mongo_url
        self.mongo: AsyncMongoClient[dict[str, Any]] = mongo.connect(settings.mongo_url)
        self.postgresql = postgres_target(settings)  # FerretDB's PostgreSQL, for its GIN indexes
        self._databases: list[str] = []

    def new_database(self) -> str:
        """A fresh database name (dropped at the end of the run at the latest)."""
        name = f"pulseseal_bench_{self.tag}_{len(self._databases)}"
        self._databases.append(name)
        return name

    async def drop_database(self, name: str) -> None:
        """Drop one of this run's databases now (frees the disk a 200k drain used)."""
        await self.mongo.drop_database(name)

    async def stored(self, database: str) -> int:
        """Documents in `database.sealed_events`, from `collStats` (on FerretDB a count scans)."""
        try:
            stats = await self.mongo[database].command({"collStats": mongo.SEALED_COLLECTION})
        except OperationFailure:  # not created yet
            return 0
        return int(stats.get("count", 0))

    async def reset_queues(self) -> None:
        """Declare the topology on the virtual host and empty both queues."""
        connection = await aio_pika.connect(self.amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            await declare_topology(channel, delivery_limit=5)
            for name in (SEAL_QUEUE, DEAD_QUEUE):
                await (await channel.get_queue(name)).purge()

    async def queue_depth(self, name: str = SEAL_QUEUE) -> int:
        """Messages ready in a queue of the virtual host."""
        connection = await aio_pika.connect(self.amqp_url, timeout=10)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            return int(queue.declaration_result.message_count or 0)

    async def drop_all(self) -> None:
        """Drop every database of the run (already dropped ones are no-ops).

        Raises:
            RuntimeError: some database could not be dropped (names them).
        """
        left = []
        for name in self._databases:
            try:
                await self.mongo.drop_database(name)
            except PyMongoError:
                left.append(name)
        if left:
            raise RuntimeError(f"could not drop {', '.join(left)} (the server was away)")


async def _retrying(what: Callable[[], Awaitable[object]], attempts: int = 6, pause_s: float = 5.0) -> None:
    # Other engineers' fault-injection runs restart the local servers now and then; cleanup waits for
    # them to come back rather than leave a virtual host or a database behind.
    for attempt in range(attempts):
        try:
            await what()
            return
        except (RuntimeError, PyMongoError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(pause_s)


@asynccontextmanager
async def scratch_servers(
    settings: Settings, warn: Callable[[str], None] = lambda _: None
) -> AsyncIterator[Scratch]:
    """Create the virtual host, yield, then delete it and every database of the run.

    A cleanup that still fails after retrying is reported through `warn`, not raised: the figures
    measured matter more than a leftover virtual host, which the message names.
    """
    scratch = Scratch(settings, secrets.token_hex(3))
    await asyncio.to_thread(rabbitmqctl, "add_vhost", scratch.vhost)
    try:
        await asyncio.to_thread(
            rabbitmqctl, "set_permissions", "-p", scratch.vhost, "guest", ".*", ".*", ".*"
        )
        await scratch.reset_queues()
        yield scratch
    finally:
        for what, cleanup in (
            ("databases", scratch.drop_all),
            (
                f"virtual host {scratch.vhost}",
                lambda: asyncio.to_thread(rabbitmqctl, "delete_vhost", scratch.vhost),
            ),
        ):
            try:
                await _retrying(cleanup)
            except Exception as exc:  # noqa: BLE001 - reported, see the docstring
                warn(f"benchmark cleanup of {what} failed: {exc}")
        await scratch.mongo.close()


def shared_scratch(ctx: BenchContext) -> AbstractAsyncContextManager[Scratch]:
    """The opener for `ctx.shared("scratch", ...)`."""
    return scratch_servers(ctx.settings, ctx.say)
