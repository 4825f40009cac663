"""The client's key cache: a bounded LRU of `DataKey` handles, each dropped once its granted TTL ends,
with single-flight fetching so that concurrent misses for one key make one request.

Erasure (contract §6): `forget` drops a shredded user's keys at once (the shred stream calls it,
keyservice/client/shreds.py); `sweep` removes expired handles, so none outlives its TTL in memory even if
never looked up again; `cap_ttl` shortens how long new handles are kept while the shred stream is down.
A fetch that was in flight while a user was forgotten is not cached (its answer may predate the shred).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Generic, TypeVar

from keyservice.wire.errors import KeyServiceUnavailable
from keyservice.wire.models import MissingReason
from pulseseal.envelope import DataKey

K = TypeVar("K", bound=Hashable)
# What a fetch says about one key: the key, or the reason it was refused ("shredded", "unknown").
Outcome = DataKey | str


class KeyCache(Generic[K]):
    """LRU of key handles; an expired handle is never returned.

    Args:
        max_size: Handles kept at most; the least recently used go first.
        clock: Monotonic seconds, for `cap_ttl` (injectable for tests).
    """

    def __init__(self, max_size: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._max = max_size
        self._clock = clock
        # Each handle with the clock time after which the cache drops it whatever its TTL (None: no cap).
        self._keys: OrderedDict[K, tuple[DataKey, float | None]] = OrderedDict()
        self._cap: float | None = None
        # Bumped whenever keys are forgotten: a fetch begun before must not cache what it brings back.
        self.generation = 0
        # Plain counters: the encryptor turns them into its hit-ratio metric.
        self.hits = 0
        self.misses = 0

    def _expired(self, entry: tuple[DataKey, float | None]) -> bool:
        key, deadline = entry
        return key.expired() or (deadline is not None and not self._clock() < deadline)

    def get(self, name: K) -> DataKey | None:
        """The cached, unexpired handle, or None."""
        entry = self._keys.get(name)
        if entry is not None and self._expired(entry):
            del self._keys[name]
            entry = None
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._keys.move_to_end(name)
        return entry[0]

    def put(self, name: K, key: DataKey) -> None:
        """Cache a handle, evicting the least recently used beyond `max_size`."""
        deadline = None if self._cap is None else self._clock() + self._cap
        self._keys[name] = (key, deadline)
        self._keys.move_to_end(name)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)

    def cap_ttl(self, seconds: float | None) -> None:
        """Keep handles cached from now on at most `seconds` (None: as long as their TTL); handles
        already cached keep the deadline they have."""
        self._cap = seconds

    def sweep(self) -> int:
        """Drop every expired handle; returns how many."""
        expired = [name for name, entry in self._keys.items() if self._expired(entry)]
        for name in expired:
            del self._keys[name]
        return len(expired)

    def forget(self, belongs: Callable[[K], bool]) -> int:
        """Drop every handle whose name `belongs` (a shredded user's); returns how many."""
        self.generation += 1
        gone = [name for name in self._keys if belongs(name)]
        for name in gone:
            del self._keys[name]
        return len(gone)

    def discard(self, name: K) -> None:
        """Forget one handle."""
        self._keys.pop(name, None)

    def clear(self) -> None:
        """Forget every handle."""
        self.generation += 1
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)


class SingleFlight(Generic[K]):
    """Cache in front of a batch fetch; concurrent callers missing the same key share one fetch."""

    def __init__(self, cache: KeyCache[K]) -> None:
        self.cache = cache
        self._inflight: dict[K, asyncio.Future[Outcome]] = {}

    async def get_many(
        self, names: Iterable[K], fetch: Callable[[list[K]], Awaitable[Mapping[K, Outcome]]]
    ) -> dict[K, Outcome]:
        """The outcome per name: cached, joined from a fetch in flight, or fetched now (one call).

        Raises:
            Whatever `fetch` raises, to this caller and to every caller that joined its fetch.
        """
        results: dict[K, Outcome] = {}
        joined: dict[K, asyncio.Future[Outcome]] = {}
        mine: dict[K, asyncio.Future[Outcome]] = {}
        loop = asyncio.get_running_loop()
        for name in dict.fromkeys(names):
            cached = self.cache.get(name)
            if cached is not None:
                results[name] = cached
            elif name in self._inflight:
                joined[name] = self._inflight[name]
            else:
                mine[name] = self._inflight[name] = loop.create_future()
        if mine:
            generation = self.cache.generation
            try:
                fetched = await fetch(list(mine))
            except BaseException as exc:
                self._settle_failed(mine, exc)
                raise
            for name, future in mine.items():
                outcome = fetched.get(name, MissingReason.UNKNOWN)
                if isinstance(outcome, DataKey) and self.cache.generation == generation:
                    self.cache.put(name, outcome)
                self._inflight.pop(name, None)
                if not future.done():
                    future.set_result(outcome)
                results[name] = outcome
        for name, future in joined.items():
            # shield: a cancelled joiner must not cancel the fetch others are waiting for.
            results[name] = await asyncio.shield(future)
        return results

    def _settle_failed(self, mine: dict[K, asyncio.Future[Outcome]], exc: BaseException) -> None:
        # The fetch's own task was cancelled: its joiners were not, so they get a retryable error instead.
        error = exc if isinstance(exc, Exception) else KeyServiceUnavailable("key fetch was cancelled")
        for name, future in mine.items():
            self._inflight.pop(name, None)
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved here: joiners may be none, and then asyncio would complain
