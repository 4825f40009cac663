"""Packing events into NDJSON messages within the contract's limits."""

from __future__ import annotations

import pytest

from producers.ndjson import NdjsonPacker, pack_ndjson


def test_lines_are_packed_in_order_within_the_event_limit() -> None:
    lines = [f'{{"n": {i}}}'.encode() for i in range(25)]
    packed = list(pack_ndjson(lines, max_events=10))
    assert [count for _, count in packed] == [10, 10, 5]
    assert b"".join(body for body, _ in packed).splitlines() == lines


def test_lines_are_packed_within_the_byte_limit_newlines_included() -> None:
    packed = list(pack_ndjson([b"x" * 9] * 5, max_bytes=20))
    assert [body for body, _ in packed] == [b"x" * 9 + b"\n" + b"x" * 9 + b"\n"] * 2 + [b"x" * 9 + b"\n"]
    assert all(len(body) <= 20 for body, _ in packed)


def test_nothing_gives_no_message() -> None:
    assert list(pack_ndjson([])) == []


def test_a_line_that_cannot_fit_any_message_is_an_error() -> None:
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        list(pack_ndjson([b"x" * 10], max_bytes=10))


def test_the_streaming_packer_gives_the_same_bodies_and_never_stops_on_one_large_line() -> None:
    lines = [b"x" * n for n in (3, 9, 1, 18, 2, 2, 2, 7)]
    packer, bodies = NdjsonPacker(max_events=3, max_bytes=20), []
    for line in lines:
        full = packer.add(line)
        if full is not None:
            bodies.append(full)
    rest = packer.flush()
    assert rest is not None
    assert [*bodies, rest] == list(pack_ndjson(lines, max_events=3, max_bytes=20))
    assert packer.flush() is None
    # Too large for any message: alone in a body of its own (the consumer refuses it), the rest goes on.
    assert packer.add(b"y" * 25) is None
    assert packer.add(b"z") == (b"y" * 25 + b"\n", 1)
