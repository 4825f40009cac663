"""Packing events into NDJSON message bodies within the contract's limits (docs/contract.md §4: 1000
events, 1 MiB), for the gateway (`pack_ndjson`, a request's events at once) and the importer
(`NdjsonPacker`, line by line as a file streams by)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from schemas import MAX_BATCH_BYTES, MAX_BATCH_EVENTS

Body = tuple[bytes, int]
"""A message body and the number of events in it."""


class NdjsonPacker:
    """Fills one NDJSON body at a time; `add` hands back the body a line did not fit into.

    Every line is one event's JSON and gets a terminating newline, which counts towards `max_bytes`.
    A line larger than `max_bytes` on its own still gets a body of its own (the consumer refuses it as
    too large), so that a stream never stops on one line.
    """

    def __init__(self, *, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES) -> None:
        self.max_events = min(max_events, MAX_BATCH_EVENTS)
        self.max_bytes = max_bytes
        self._lines: list[bytes] = []
        self._size = 0

    def add(self, line: bytes) -> Body | None:
        """Add one event's line; returns the full body it had to close first, if any."""
        cost = len(line) + 1
        full = None
        if self._lines and (len(self._lines) >= self.max_events or self._size + cost > self.max_bytes):
            full = self.flush()
        self._lines.append(line)
        self._size += cost
        return full

    def flush(self) -> Body | None:
        """The body being filled, if it holds any line; the packer starts a new one."""
        if not self._lines:
            return None
        body = b"\n".join(self._lines) + b"\n", len(self._lines)
        self._lines, self._size = [], 0
        return body


def pack_ndjson(
    lines: Sequence[bytes], *, max_events: int = MAX_BATCH_EVENTS, max_bytes: int = MAX_BATCH_BYTES
) -> Iterator[Body]:
    """Yield (body, event count) for as few messages as hold `lines` in order, each within the limits.

    Raises:
        ValueError: one line alone is larger than `max_bytes` (no valid event is).
    """
    packer = NdjsonPacker(max_events=max_events, max_bytes=max_bytes)
    for line in lines:
        if len(line) + 1 > max_bytes:
            raise ValueError(f"one event is larger than {max_bytes} bytes")
        full = packer.add(line)
        if full is not None:
            yield full
    rest = packer.flush()
    if rest is not None:
        yield rest
