"""The timing helpers: time-boxed repeats over the whole data set, nearest-rank percentiles."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bench.timing import latency, measure_rate


def test_a_rate_counts_every_item_run_and_goes_round_the_data() -> None:
    seen: list[int] = []

    def run(chunk: Sequence[int]) -> None:
        seen.extend(chunk)

    rate = measure_rate(run, list(range(10)), chunk=4, min_seconds=0.01, repeats=3)
    assert seen[:4] == [0, 1, 2, 3]  # the warm-up chunk
    assert seen[4:14] == list(range(10))  # then the data in order, in chunks of 4, 4 and 2
    assert rate.repeats == 3
    assert len(rate.samples) == 3
    assert rate.per_s > 0
    assert rate.best_per_s >= rate.per_s
    assert rate.items_per_repeat >= 4


@pytest.mark.parametrize(
    ("items", "chunk", "repeats", "seconds"),
    [([], 1, 1, 0.1), ([1], 0, 1, 0.1), ([1], 1, 0, 0.1), ([1], 1, 1, 0.0)],
)
def test_a_rate_needs_something_to_time(items: list[int], chunk: int, repeats: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="needs items"):
        measure_rate(lambda _: None, items, chunk=chunk, min_seconds=seconds, repeats=repeats)


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    result = latency([n / 1000 for n in range(100, 0, -1)])
    assert (result.n, result.p50_ms, result.p90_ms, result.p99_ms, result.max_ms) == (
        100,
        50.0,
        90.0,
        99.0,
        100.0,
    )
    assert latency([0.002]).p99_ms == 2.0
    small = latency([0.001, 0.002, 0.003])
    assert (small.p50_ms, small.p99_ms) == (2.0, 3.0)


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        latency([])
