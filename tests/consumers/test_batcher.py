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
