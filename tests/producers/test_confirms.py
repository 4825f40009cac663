"""The one confirm window: bounded in flight, settled strictly in submission order, failures stop there."""

from __future__ import annotations

import asyncio

import pytest

from producers.confirms import InOrderConfirms
from producers.publisher import BrokerUnavailable


class Broker:
    """Confirms item n when its gate opens; fails the items listed."""

    def __init__(self, failing: set[int] | None = None) -> None:
        self.gates: dict[int, asyncio.Event] = {}
        self.failing = failing or set()
        self.in_flight = self.most_in_flight = 0

    def gate(self, n: int) -> asyncio.Event:
        return self.gates.setdefault(n, asyncio.Event())

    async def publish(self, n: int) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if n in self.failing:
                raise BrokerUnavailable("connection lost")
            await self.gate(n).wait()
        finally:
            self.in_flight -= 1


async def test_later_confirms_wait_for_earlier_ones_and_the_window_is_bounded() -> None:
    broker, settled = Broker(), list[int]()

    async def confirmed(n: int) -> None:
        settled.append(n)

    window = InOrderConfirms(broker.publish, max_in_flight=3, on_confirmed=confirmed)
    for n in range(3):
        await window.submit(n)
    broker.gate(2).set()
    broker.gate(1).set()
    await asyncio.sleep(0.01)
    assert settled == []  # 1 and 2 are in, but 0 is not yet
    broker.gate(0).set()
    for n in range(3, 6):
        broker.gate(n).set()
        await window.submit(n)
    await window.drain()
    assert settled == [0, 1, 2, 3, 4, 5]
    assert broker.most_in_flight <= 3
    assert (window.submitted, window.settled) == (6, 6)


async def test_a_failure_without_a_handler_stops_there_and_later_items_stay_unsettled() -> None:
    broker, settled = Broker(failing={1}), list[int]()

    async def confirmed(n: int) -> None:
        settled.append(n)

    window = InOrderConfirms(broker.publish, max_in_flight=8, on_confirmed=confirmed)
    for n in range(4):
        broker.gate(n).set()
        await window.submit(n)
    with pytest.raises(BrokerUnavailable):
        await window.drain()
    window.abandon()
    assert (settled, window.settled) == ([0], 1)


async def test_a_handler_may_put_a_failed_item_in_after_all() -> None:
    broker, settled, handled = Broker(failing={0}), list[int](), list[int]()

    async def confirmed(n: int) -> None:
        settled.append(n)

    async def again(n: int, failure: BrokerUnavailable | Exception) -> None:
        handled.append(n)

    window = InOrderConfirms(broker.publish, max_in_flight=2, on_confirmed=confirmed, on_failed=again)
    broker.gate(1).set()
    await window.submit(0)
    await window.submit(1)
    await window.drain()
    assert (handled, settled) == ([0], [0, 1])
