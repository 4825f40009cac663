"""The one request-body reader: refused as soon as it is too large, and bounded in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import Request

from keyservice.callers import CallerRegistry
from keyservice.edge import Edge, RefusalLimiter
from keyservice.wire.errors import RequestTimeout, RequestTooLarge
from pulseseal.bodies import BodyTimeout, BodyTooLarge, read_limited


async def chunks(*parts: bytes, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(pause_s)
        yield part


async def test_a_body_within_the_limit_is_read_whole() -> None:
    body = await read_limited(chunks(b"ab", b"cd"), declared_length="4", limit=4, timeout_s=1)
    assert body == b"abcd"


@pytest.mark.parametrize("declared", ["5", "abc", "-1", 5])
async def test_a_declared_length_over_the_limit_or_not_a_number_is_refused_before_reading(
    declared: str | int,
) -> None:
    read = False

    async def untouched() -> AsyncIterator[bytes]:
        nonlocal read
        read = True
        yield b""

    with pytest.raises(BodyTooLarge):
        await read_limited(untouched(), declared_length=declared, limit=4, timeout_s=1)
    assert not read


async def test_a_body_that_grows_past_the_limit_is_refused_while_streaming() -> None:
    with pytest.raises(BodyTooLarge):
        await read_limited(chunks(b"abc", b"de"), declared_length=None, limit=4, timeout_s=1)


async def test_a_trickling_body_times_out() -> None:
    with pytest.raises(BodyTimeout):
        await read_limited(chunks(b"a", b"b", pause_s=0.2), declared_length=None, limit=4, timeout_s=0.1)


def _request(*parts: bytes, pause_s: float = 0.0, length: str | None = None) -> Request:
    pending = list(parts)

    async def receive() -> dict[str, object]:
        await asyncio.sleep(pause_s)
        chunk = pending.pop(0) if pending else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    headers = [] if length is None else [(b"content-length", length.encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


async def test_the_key_service_answers_a_slow_body_with_408_and_a_large_one_with_413() -> None:
    edge = Edge(CallerRegistry({}), body_timeout_s=0.1, limiter=RefusalLimiter())
    assert await edge.read_body(_request(b"{}", b"[]"), 1024) == b"{}[]"
    with pytest.raises(RequestTimeout):
        await edge.read_body(_request(b"{", b"}", pause_s=0.2), 1024)
    with pytest.raises(RequestTooLarge):
        await edge.read_body(_request(b"{}", length=str(10**9)), 1024)
    with pytest.raises(RequestTooLarge):  # a Unicode digit is not a length
        await edge.read_body(_request(b"{}", length="\u00b2"), 1024)
