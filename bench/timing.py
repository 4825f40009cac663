"""How the benchmark times things: throughput as the median of time-boxed repeats, latency percentiles.

Wall time (`time.perf_counter`) is what every figure reports. Process CPU time is recorded beside it: on a
shared machine the two part ways when the process waits for a core, and the gap says how much a figure
was bent by the load rather than by the code.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Rate:
    """Items per second over `repeats` time-boxed runs."""

    per_s: float
    """Median over the repeats (the figure reported)."""
    best_per_s: float
    per_cpu_s: float
    """Median of items per second of process CPU time (≈ `per_s` on an idle machine)."""
    repeats: int
    items_per_repeat: int
    """Median number of items one repeat got through."""
    samples: tuple[float, ...]


def measure_rate(
    run: Callable[[Sequence[T]], object],
    items: Sequence[T],
    *,
    chunk: int,
    min_seconds: float,
    repeats: int,
) -> Rate:
    """Time `run` over `items`, `chunk` at a time, in `repeats` runs of at least `min_seconds` each.

    Each repeat goes through the items in order, from the start and round again if time is left, so a
    fast subject works on the whole (cache-cold) data set and a slow one on a prefix of it. One chunk
    is run first as a warm-up. A full garbage collection runs before each repeat, never inside one.

    Raises:
        ValueError: `items` is empty, or `chunk`, `repeats` or `min_seconds` is not positive.
    """
    if not items or chunk < 1 or repeats < 1 or min_seconds <= 0:
        raise ValueError("measure_rate needs items, a positive chunk, repeats and min_seconds")
    chunks = [items[start : start + chunk] for start in range(0, len(items), chunk)]
    run(chunks[0])
    rates: list[float] = []
    cpu_rates: list[float] = []
    counts: list[int] = []
    for _ in range(repeats):
        gc.collect()
        done = 0
        index = 0
        started, cpu_started = time.perf_counter(), time.process_time()
        while True:
            part = chunks[index]
            run(part)
            done += len(part)
            index = (index + 1) % len(chunks)
            elapsed = time.perf_counter() - started
            if elapsed >= min_seconds:
                break
        cpu = max(time.process_time() - cpu_started, 1e-9)
        rates.append(done / elapsed)
        cpu_rates.append(done / cpu)
        counts.append(done)
    return Rate(
        per_s=statistics.median(rates),
        best_per_s=max(rates),
        per_cpu_s=statistics.median(cpu_rates),
        repeats=repeats,
        items_per_repeat=int(statistics.median(counts)),
        samples=tuple(rates),
    )


@dataclass(frozen=True, slots=True)
class Latency:
    """Latency percentiles (nearest rank) of `n` samples, in milliseconds."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def latency(samples_s: Sequence[float]) -> Latency:
    """Percentiles of `samples_s` (seconds) by the nearest-rank method, in milliseconds.

    Raises:
        ValueError: no samples.
    """
    if not samples_s:
        raise ValueError("no latency samples")
    ordered = sorted(samples_s)

    def rank(q: float) -> float:
        # Nearest rank, ceil(q * n) - 1, in integers (per mille): in floats 0.99 * 100 is 99.00000000000001.
        per_mille = round(q * 1000)
        index = max(0, -(-per_mille * len(ordered) // 1000) - 1)
        return ordered[index] * 1000

    return Latency(
        n=len(ordered),
        p50_ms=rank(0.50),
        p90_ms=rank(0.90),
        p99_ms=rank(0.99),
        max_ms=ordered[-1] * 1000,
    )
