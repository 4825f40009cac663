"""The confirm window: many in flight, committed strictly in order, failed batches retried or the import stopped."""

from __future__ import annotations

import asyncio

import pytest

from producers.importer.checkpoint import Checkpoint
from producers.importer.window import Batch, ConfirmWindow, ImportAborted
from producers.publisher import BrokerUnavailable


class FakeBroker:
    """Confirms each body when the test says so, or fails it a given number of times first."""

    def __init__(self, failures: dict[bytes, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.gates: dict[bytes, asyncio.Event] = {}
        self.attempts: list[bytes] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def gate(self, body: bytes) -> asyncio.Event:
        return self.gates.setdefault(body, asyncio.Event())

    async def publish(self, body: bytes, *, routing_key: str, content_type: str) -> None:
        self.attempts.append(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.failures.get(body, 0) > 0:
                self.failures[body] -= 1
                raise BrokerUnavailable("connection lost")
            await self.gate(body).wait()
        finally:
            self.in_flight -= 1


def batch(n: int) -> Batch:
    return Batch(
        f"b{n}".encode(),
        1,
        Checkpoint("ndjson", "", line=n, offset=n, imported=n, rejected=0, rejected_bytes=0),
    )


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


def window(
    broker: FakeBroker, confirmed: list[int], retries: list[str], *, in_flight: int = 4, retry_s: float = 5
) -> ConfirmWindow:
    return ConfirmWindow(
        broker,
        max_in_flight=in_flight,
        retry_s=retry_s,
        on_confirmed=lambda b: confirmed.append(b.checkpoint.line),
        on_retry=retries.append,
        sleep=no_sleep,
    )


async def test_later_confirms_wait_for_earlier_ones() -> None:
    broker, confirmed = FakeBroker(), list[int]()
    pipe = window(broker, confirmed, [])
    for n in range(3):
        await pipe.submit(batch(n))
    broker.gate(b"b2").set()
    broker.gate(b"b1").set()
    await asyncio.sleep(0.01)
    assert confirmed == []  # b0 is still out: nothing after it counts yet
    broker.gate(b"b0").set()
    await pipe.drain()
    assert confirmed == [0, 1, 2]


async def test_no_more_than_max_in_flight_are_outstanding() -> None:
    broker, confirmed = FakeBroker(), list[int]()
    pipe = window(broker, confirmed, [], in_flight=3)

    async def release() -> None:
        for n in range(10):
            await asyncio.sleep(0.005)
            broker.gate(f"b{n}".encode()).set()

    releaser = asyncio.create_task(release())
    for n in range(10):
        await pipe.submit(batch(n))
    await pipe.drain()
    await releaser
    assert broker.most_in_flight == 3
    assert confirmed == list(range(10))


async def test_a_failed_batch_is_retried_and_order_kept() -> None:
    broker, confirmed, retries = FakeBroker({b"b1": 2}), list[int](), list[str]()
    for n in range(3):
        broker.gate(f"b{n}".encode()).set()
    pipe = window(broker, confirmed, retries)
    for n in range(3):
        await pipe.submit(batch(n))
    await pipe.drain()
    assert confirmed == [0, 1, 2]
    assert broker.attempts.count(b"b1") == 3
    assert retries == ["connection lost"]


async def test_a_broker_gone_for_longer_than_the_retry_time_stops_the_import() -> None:
    broker, confirmed = FakeBroker({b"b1": 10**6}), list[int]()
    broker.gate(b"b0").set()
    pipe = window(broker, confirmed, [], retry_s=0.05)
    await pipe.submit(batch(0))
    await pipe.submit(batch(1))
    with pytest.raises(ImportAborted, match="did not take the events"):
        await pipe.drain()
    assert confirmed == [0]


async def test_abandon_cancels_what_is_outstanding() -> None:
    broker, confirmed = FakeBroker(), list[int]()
    pipe = window(broker, confirmed, [])
    await pipe.submit(batch(0))
    pipe.abandon()
    await pipe.drain()
    assert confirmed == []
