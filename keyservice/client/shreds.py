"""Following the key service's shred notices: a shredded user's keys leave this process's cache at once.

`ShredFollower` holds `GET /v1/shreds/stream` open (keyservice/wire/shreds.py) and, for each `shred`
notice, drops every cached key of that user (current and by version). The service sends a heartbeat every
quarter second; a stream silent for `SILENCE_S`, closed, or refused counts as down, and while it is down
the follower has dropped every cached key and the cache keeps new keys at most `FALLBACK_TTL_S` (so a
shred this process did not hear about still takes effect within a second). It reconnects with backoff and
resumes after the last notice it saw (`Last-Event-ID`); a `reset` (its position is gone) drops everything.
It also sweeps expired keys out of both caches every `SWEEP_S`, so no key outlives its TTL in memory.

    follower = ShredFollower(client)
    follower.start()
    ...
    await follower.aclose()
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import httpx

from keyservice.client.api import KeyServiceClient
from keyservice.wire.shreds import PATH, SCOPE, SILENCE_S

log = logging.getLogger(__name__)

FALLBACK_TTL_S = 0.8  # below 1 s: a key fetched just before a shred is gone within 1 s of it
SWEEP_S = 1.0
_WATCH_S = 0.1
_BACKOFF_MAX_S = 2.0


@dataclass(slots=True)
class _Event:
    name: str = "message"
    event_id: str | None = None
    data: list[str] = field(default_factory=list)


class StreamDown(Exception):
    """The shred stream ended, went silent, or was refused."""


class ShredFollower:
    """Follows the shred stream for one `KeyServiceClient` and keeps its caches honest.

    Args:
        client: The client whose caches to keep.
        on_shred: Called with each shredded user id after its keys were dropped (metrics, measurements).
        clock: Monotonic seconds (when the last byte arrived).
    """

    def __init__(
        self,
        client: KeyServiceClient,
        *,
        on_shred: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._on_shred = on_shred
        self._clock = clock
        self._last_id: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._abandoned: set[asyncio.Task[None]] = set()  # attempts given up on, still unwinding
        self._attempt = 0
        self._heard_at = clock()
        self.connected = False
        self.notices = 0
        self._down(initial=True)

    def _caches_forget(self, user_id: str) -> None:
        current, versions = self._client.caches
        current.forget(lambda name: name == user_id)
        versions.forget(lambda name: name[0] == user_id)

    def _down(self, *, initial: bool = False) -> None:
        current, versions = self._client.caches
        if self.connected or initial:
            # Notices may be missed from now on: nothing cached may outlive the fallback TTL.
            current.clear()
            versions.clear()
            for cache in (current, versions):
                cache.cap_ttl(FALLBACK_TTL_S)
        self.connected = False

    def _up(self) -> None:
        for cache in self._client.caches:
            cache.cap_ttl(None)
        self.connected = True

    def start(self) -> None:
        """Start following and sweeping in the background (idempotent)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._follow_forever()),
                asyncio.create_task(self._sweep_forever()),
            ]

    async def aclose(self) -> None:
        """Stop following; the caches are left as they are (the client's `aclose` clears them). Never
        waits long: a read stuck in the network must not hold up a shutdown."""
        tasks = [*self._tasks, *self._abandoned]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._tasks = []

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            for cache in self._client.caches:
                cache.sweep()

    async def _follow_forever(self) -> None:
        delay = 0.1
        while True:
            self._attempt += 1
            self._heard_at = self._clock()
            attempt = asyncio.create_task(self.follow_once(self._attempt))
            try:
                why = await self._watch(attempt)
            except asyncio.CancelledError:
                attempt.cancel()
                raise
            if self.connected:
                log.warning("shred stream down (%s): cached keys dropped, short TTLs until it is back", why)
            # Back off while the stream stays away; after it was up, the first retry comes soon again.
            delay = 0.1 if self.connected else min(_BACKOFF_MAX_S, delay * 2)
            self._down()
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _watch(self, attempt: asyncio.Task[None]) -> str:
        """Wait for one connection attempt to end, or for the stream to fall silent; say why it ended.

        Silence is judged here, not by a timeout around the read: the caches are dropped as soon as the
        stream is silent for `SILENCE_S`, whether or not the stuck read gives way to its cancellation.
        """
        while True:
            done, _ = await asyncio.wait({attempt}, timeout=_WATCH_S)
            if done:
                if attempt.cancelled():
                    return "cancelled"
                failure = attempt.exception()
                if isinstance(failure, StreamDown | httpx.HTTPError):
                    return str(failure) or type(failure).__name__
                log.error("shred stream failed (%s)", type(failure).__name__)
                return type(failure).__name__
            if self._clock() - self._heard_at > SILENCE_S:
                self._down()
                attempt.cancel()
                self._abandoned.add(attempt)
                attempt.add_done_callback(self._abandoned.discard)
                return f"silent for {SILENCE_S} s"

    async def follow_once(self, attempt: int = 0) -> None:
        """Open the stream and apply its events until it ends (events of an attempt the watchdog gave up
        on are ignored).

        Raises:
            StreamDown: refused, or ended.
            httpx.HTTPError: the connection failed.
        """
        headers = {"Accept": "text/event-stream"}
        if self._last_id is not None:
            headers["Last-Event-ID"] = self._last_id
        async with self._client.stream(PATH, SCOPE, headers) as response:
            if response.status_code != 200:
                await response.aread()
                raise StreamDown(f"refused with HTTP {response.status_code}")
            async for event in self._events(response, attempt):
                if attempt == self._attempt:
                    self._apply(event)
        raise StreamDown("the key service ended the stream")

    def _apply(self, event: _Event) -> None:
        if event.name == "reset":
            for cache in self._client.caches:
                cache.clear()
        elif event.name == "ready":
            self._up()
            log.info("following shred notices")
        elif event.name == "shred":
            user_id = str(json.loads("".join(event.data))["user_id"])
            self._caches_forget(user_id)
            self.notices += 1
            if self._on_shred is not None:
                self._on_shred(user_id)
        if event.event_id is not None:
            self._last_id = event.event_id

    async def _events(self, response: httpx.Response, attempt: int) -> AsyncIterator[_Event]:
        event = _Event()
        async for line in response.aiter_lines():
            if attempt == self._attempt:
                self._heard_at = self._clock()
            if not line:
                if event.data or event.name != "message":
                    yield event
                event = _Event()
            elif line.startswith(":"):
                continue  # heartbeat: the stream is alive
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "event":
                    event.name = value
                elif name == "id":
                    event.event_id = value
                elif name == "data":
                    event.data.append(value)
