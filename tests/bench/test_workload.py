"""The benchmark's synthetic events: valid, reproducible, and exactly the size asked for."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from bench.harness import BenchContext
from bench.traffic import USERS as DRAIN_USERS
from bench.traffic import shared_workload
from bench.workload import sized_events
from pulseseal.settings import Settings
from schemas import canonical_json
from shell.synthetic import TYPE_WEIGHTS

USERS = [f"user-{n:03d}" for n in range(50)]
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("size", [300, 4096])
def test_sized_events_serialise_to_exactly_the_size(size: int) -> None:
    events = sized_events(300, size, USERS, random.Random(size), now=NOW)
    assert {len(canonical_json(event)) for event in events} == {size}
    assert len({event.event_id for event in events}) == 300


def test_the_300_byte_events_keep_the_realistic_mix() -> None:
    events = sized_events(2000, 300, USERS, random.Random(3), now=NOW)
    assert set(Counter(event.type for event in events)) == set(TYPE_WEIGHTS)


def test_a_size_out_of_reach_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be made exactly"):
        sized_events(10, 100, USERS, random.Random(4), now=NOW)
    with pytest.raises(ValueError, match="cannot be made exactly"):
        sized_events(1, 64 * 1024, USERS, random.Random(4), now=NOW)


@pytest.mark.parametrize(("quick", "events", "expected"), [(True, None, 10_000), (True, 3000, 3000)])
async def test_the_drain_workload_has_the_events_asked_for(
    quick: bool, events: int | None, expected: int
) -> None:
    ctx = BenchContext(quick=quick, settings=Settings(), seed=7, progress=lambda _: None, events=events)
    try:
        workload = await ctx.shared("workload", shared_workload)
        assert len(workload.lines) == expected
        assert workload.users == DRAIN_USERS
        assert len(workload.batches()) == expected // 1000
    finally:
        await ctx.aclose()
