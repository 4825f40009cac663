"""The client's key cache and single-flight, with an injected clock."""

from __future__ import annotations

import asyncio
import os

import pytest

from keyservice.client.cache import KeyCache, Outcome, SingleFlight
from keyservice.wire.errors import KeyServiceUnavailable
from pulseseal.envelope import DataKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def key(user: str, clock: Clock, ttl: float = 60) -> DataKey:
    return DataKey(user, 1, os.urandom(32), expires_at=clock() + ttl, clock=clock)


def test_a_key_is_never_served_past_its_ttl() -> None:
    clock, cache = Clock(), KeyCache[str](10)
    cache.put("a", key("a", clock, ttl=60))
    clock.now += 59.9
    assert cache.get("a") is not None
    clock.now += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0


def test_lru_is_bounded() -> None:
    clock, cache = Clock(), KeyCache[str](3)
    for user in "abc":
        cache.put(user, key(user, clock))
    cache.get("a")
    cache.put("d", key("d", clock))
    assert [u for u in "abcd" if cache.get(u) is not None] == ["a", "c", "d"]
    with pytest.raises(ValueError, match="at least 1"):
        KeyCache[str](0)


async def test_concurrent_misses_share_one_fetch() -> None:
    clock = Clock()
    flight = SingleFlight[str](KeyCache(100))
    calls: list[list[str]] = []
    gate = asyncio.Event()

    async def fetch(names: list[str]) -> dict[str, Outcome]:
        calls.append(names)
        await gate.wait()
        return {n: key(n, clock) if n != "gone" else "shredded" for n in names}

    tasks = [asyncio.create_task(flight.get_many(["a", "gone"], fetch)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert calls == [["a", "gone"]]
    assert all(r["a"] is results[0]["a"] and r["gone"] == "shredded" for r in results)
    # Afterwards the key comes from the cache; the refusal is not cached.
    await flight.get_many(["a", "gone"], fetch)
    assert calls == [["a", "gone"], ["gone"]]


async def test_a_failed_fetch_fails_its_joiners_and_is_not_cached() -> None:
    flight = SingleFlight[str](KeyCache(100))
    gate = asyncio.Event()

    async def failing(names: list[str]) -> dict[str, Outcome]:
        await gate.wait()
        raise KeyServiceUnavailable("down")

    owner = asyncio.create_task(flight.get_many(["a"], failing))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(flight.get_many(["a"], failing))
    await asyncio.sleep(0)
    gate.set()
    for task in (owner, joiner):
        with pytest.raises(KeyServiceUnavailable):
            await task
    clock = Clock()

    async def working(names: list[str]) -> dict[str, Outcome]:
        return {n: key(n, clock) for n in names}

    assert isinstance((await flight.get_many(["a"], working))["a"], DataKey)


async def test_a_cancelled_fetch_gives_joiners_a_retryable_error() -> None:
    flight = SingleFlight[str](KeyCache(100))

    async def slow(names: list[str]) -> dict[str, Outcome]:
        await asyncio.sleep(10)
        return {}

    owner = asyncio.create_task(flight.get_many(["a"], slow))
    await asyncio.sleep(0)
    joiner = asyncio.create_task(flight.get_many(["a"], slow))
    await asyncio.sleep(0)
    owner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await owner
    with pytest.raises(KeyServiceUnavailable):
        await joiner


def test_forget_sweep_and_cap() -> None:
    clock = Clock()
    cache = KeyCache[tuple[str, int]](10, clock=clock)
    cache.put(("a", 1), key("a", clock, ttl=5))
    cache.put(("a", 2), key("a", clock, ttl=60))
    cache.put(("b", 1), key("b", clock, ttl=60))
    assert cache.forget(lambda name: name[0] == "a") == 2
    assert cache.get(("b", 1)) is not None
    cache.cap_ttl(1.0)
    cache.put(("c", 1), key("c", clock, ttl=60))
    clock.now += 1.0
    # Swept without a lookup: expired handles do not sit in memory until someone asks for them.
    assert cache.sweep() == 1
    assert len(cache) == 1
    cache.cap_ttl(None)
    cache.put(("c", 1), key("c", clock, ttl=60))
    clock.now += 59
    assert cache.sweep() == 1  # b's TTL ended; c (no cap any more) stays
    assert cache.get(("c", 1)) is not None


async def test_a_fetch_in_flight_while_a_user_is_forgotten_is_not_cached() -> None:
    clock = Clock()
    flight = SingleFlight[str](KeyCache(100))
    release = asyncio.Event()

    async def fetch(names: list[str]) -> dict[str, Outcome]:
        await release.wait()  # the shred notice arrives while the key service's answer is on its way
        return {n: key(n, clock) for n in names}

    task = asyncio.create_task(flight.get_many(["a"], fetch))
    await asyncio.sleep(0)
    flight.cache.forget(lambda name: name == "a")
    release.set()
    assert isinstance((await task)["a"], DataKey)  # this one batch may use it: granted before the shred
    assert flight.cache.get("a") is None  # but it is not kept
