"""Packing events into NDJSON message bodies within the limits of docs/contract.md §4 (1000 events, 1 MiB)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from schemas import MAX_BATCH_BYTES, MAX_BATCH_EVENTS


def pack_ndjson(
    lines: Sequence[bytes], *, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[tuple[bytes, int]]:
    """Yield (body, event count) for as few messages as hold `lines` in order, each within the limits.

    Every line is one event's JSON and gets a terminating newline, which counts towards `max_bytes`.

    Raises:
        ValueError: one line alone is larger than `max_bytes` (no valid event is).
    """
    batch: list[bytes] = []
    size = 0
    for line in lines:
        cost = len(line) + 1
        if cost > max_bytes:
            raise ValueError(f"one event is larger than {max_bytes} bytes")
        if batch and (len(batch) >= max_events or size + cost > max_bytes):
            yield b"\n".join(batch) + b"\n", len(batch)
            batch, size = [], 0
        batch.append(line)
        size += cost
    if batch:
        yield b"\n".join(batch) + b"\n", len(batch)
