"""The micro-batcher: flush triggers, per-submitter results, failures and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from consumers.batcher import BatcherClosed, MicroBatcher


class Recorder:
    """A flush function that records its batches and answers each item with its own length."""

    def __init__(self, delay_s: float = 0.0, fail: Exception | None = None) -> None:
        self.batches: list[list[str]] = []
        self.delay_s = delay_s
        self.fail = fail

    async def __call__(self, items: Sequence[str]) -> list[int]:
        self.batches.append(list(items))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        return [len(item) for item in items]


async def test_flushes_when_max_items_reached_without_waiting_for_the_delay() -> None:
    flush = Recorder()
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=3, max_delay_s=60, max_waiting=100)
    batcher.start()
    results = list(
        await asyncio.wait_for(
            asyncio.gather(batcher.submit("a", 1), batcher.submit("bb", 1), batcher.submit("ccc", 1)), 5
        )
    )
    assert results == [1, 2, 3]
    assert flush.batches == [["a", "bb", "ccc"]]
    await batcher.close(1)


async def test_flushes_after_the_delay_when_the_batch_stays_small() -> None:
    flush = Recorder()
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=1000, max_delay_s=0.05, max_waiting=100)
    batcher.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await asyncio.wait_for(batcher.submit("abcd", 4), 5) == 4
    assert loop.time() - started >= 0.04
    assert flush.batches == [["abcd"]]
    await batcher.close(1)


async def test_flushes_at_once_when_every_possible_message_is_waiting() -> None:
    flush = Recorder()
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=1000, max_delay_s=60, max_waiting=2)
    batcher.start()
    results = list(await asyncio.wait_for(asyncio.gather(batcher.submit("x", 1), batcher.submit("yy", 1)), 5))
    assert results == [1, 2]


async def test_items_count_by_their_size_not_by_submissions() -> None:
    flush = Recorder()
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=10, max_delay_s=60, max_waiting=100)
    batcher.start()
    assert await asyncio.wait_for(batcher.submit("big", 10), 5) == 3
    assert flush.batches == [["big"]]
    await batcher.close(1)


async def test_a_failed_flush_fails_every_submitter_of_that_batch_only() -> None:
    flush = Recorder(fail=RuntimeError("store down"))
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=2, max_delay_s=60, max_waiting=100)
    batcher.start()
    outcomes = await asyncio.wait_for(
        asyncio.gather(batcher.submit("a", 1), batcher.submit("b", 1), return_exceptions=True), 5
    )
    assert [type(o) for o in outcomes] == [RuntimeError, RuntimeError]
    flush.fail = None
    assert list(
        await asyncio.wait_for(asyncio.gather(batcher.submit("c", 1), batcher.submit("dd", 1)), 5)
    ) == [1, 2]
    await batcher.close(1)


async def test_submissions_during_a_flush_go_into_the_next_batch() -> None:
    flush = Recorder(delay_s=0.1)
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=1, max_delay_s=60, max_waiting=100)
    batcher.start()
    first = asyncio.create_task(batcher.submit("a", 1))
    await asyncio.sleep(0.02)  # the first flush is now running
    second = asyncio.create_task(batcher.submit("bb", 1))
    assert list(await asyncio.wait_for(asyncio.gather(first, second), 5)) == [1, 2]
    assert flush.batches == [["a"], ["bb"]]
    await batcher.close(1)


async def test_close_flushes_what_waits_without_the_delay_and_then_refuses() -> None:
    flush = Recorder()
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=1000, max_delay_s=60, max_waiting=100)
    batcher.start()
    pending = asyncio.create_task(batcher.submit("abc", 1))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(batcher.close(5), 5)
    assert await pending == 3
    with pytest.raises(BatcherClosed):
        await batcher.submit("late", 1)


async def test_close_gives_up_on_a_stuck_flush_and_fails_its_submitters() -> None:
    flush = Recorder(delay_s=60)
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=1, max_delay_s=60, max_waiting=100)
    batcher.start()
    pending = asyncio.create_task(batcher.submit("stuck", 1))
    await asyncio.sleep(0.02)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await batcher.close(0.2)
    assert loop.time() - started < 2
    with pytest.raises(BatcherClosed):
        await pending


async def test_a_backlog_is_flushed_in_batches_of_at_most_max_items() -> None:
    flush = Recorder(delay_s=0.05)
    batcher: MicroBatcher[str, int] = MicroBatcher(flush, max_items=2, max_delay_s=0.2, max_waiting=100)
    batcher.start()
    first = asyncio.create_task(batcher.submit("a", 2))
    await asyncio.sleep(0.01)  # "a" is being flushed; a backlog of five builds up behind it
    backlog = [asyncio.create_task(batcher.submit(s, 1)) for s in ("b", "c", "d", "e", "f")]
    await asyncio.wait_for(asyncio.gather(first, *backlog), 5)
    assert flush.batches == [["a"], ["b", "c"], ["d", "e"], ["f"]]
    await batcher.close(1)


class Gate:
    """A flush function that holds every batch until released, recording which batches are in flight."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()

    async def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return [item.upper() for item in items]


async def test_with_two_flushes_in_flight_the_next_batch_starts_before_the_first_is_written() -> None:
    gate = Gate()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        gate, max_items=1, max_delay_s=60, max_waiting=100, max_concurrent=2
    )
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(s, 1)) for s in ("a", "b", "c")]
    await asyncio.sleep(0.05)
    # Two batches are being written; the third waits for a slot.
    assert gate.batches == [["a"], ["b"]]
    assert gate.in_flight == 2
    gate.release.set()
    assert list(await asyncio.wait_for(asyncio.gather(*tasks), 5)) == ["A", "B", "C"]
    assert gate.most_in_flight == 2
    await batcher.close(1)


async def test_each_submitter_gets_its_own_batchs_outcome_when_batches_overlap() -> None:
    failing = {"bad"}

    async def flush(items: Sequence[str]) -> list[int]:
        await asyncio.sleep(0.05 if items[0] == "bad" else 0.01)
        if items[0] in failing:
            raise RuntimeError("store refused this batch")
        return [len(item) for item in items]

    batcher: MicroBatcher[str, int] = MicroBatcher(
        flush, max_items=1, max_delay_s=60, max_waiting=100, max_concurrent=2
    )
    batcher.start()
    outcomes = await asyncio.wait_for(
        asyncio.gather(batcher.submit("bad", 1), batcher.submit("good", 1), return_exceptions=True), 5
    )
    assert isinstance(outcomes[0], RuntimeError)
    assert outcomes[1] == 4
    await batcher.close(1)


async def test_close_waits_for_every_flush_in_flight() -> None:
    gate = Gate()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        gate, max_items=1, max_delay_s=60, max_waiting=100, max_concurrent=2
    )
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(s, 1)) for s in ("a", "b")]
    await asyncio.sleep(0.02)
    closing = asyncio.create_task(batcher.close(5))
    await asyncio.sleep(0.02)
    assert not closing.done()
    gate.release.set()
    await asyncio.wait_for(closing, 5)
    assert [task.result() for task in tasks] == ["A", "B"]


async def test_close_gives_up_on_stuck_flushes_in_flight_and_fails_their_submitters() -> None:
    gate = Gate()
    batcher: MicroBatcher[str, str] = MicroBatcher(
        gate, max_items=1, max_delay_s=60, max_waiting=100, max_concurrent=2
    )
    batcher.start()
    tasks = [asyncio.create_task(batcher.submit(s, 1)) for s in ("a", "b", "c")]
    await asyncio.sleep(0.02)
    await batcher.close(0.2)
    for task in tasks:
        with pytest.raises(BatcherClosed):
            await task


def test_at_least_one_flush_must_be_allowed() -> None:
    async def flush(items: Sequence[str]) -> list[int]:
        return []

    with pytest.raises(ValueError, match="max_concurrent"):
        MicroBatcher(flush, max_items=1, max_delay_s=1, max_waiting=1, max_concurrent=0)
