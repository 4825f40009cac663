"""Reading an HTTP request body within a size limit and a deadline, for the gateway and the key service.

The body is refused as soon as it is known to be too large — from `Content-Length` before a byte is read,
or while it streams in — so a client cannot make a server hold more than `limit` bytes; and it must
have arrived whole within `timeout_s`, so a client trickling bytes cannot hold a connection and a task
for ever. Each server maps the two failures to its own error answers (413, 408).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable


class BodyTooLarge(Exception):
    """The declared or the actual body is larger than the limit."""


class BodyTimeout(Exception):
    """The body did not arrive whole in time."""


async def read_limited(
    chunks: AsyncIterable[bytes], *, declared_length: str | int | None, limit: int, timeout_s: float
) -> bytes:
    """Read a body of at most `limit` bytes within `timeout_s`.

    Args:
        chunks: The body as it arrives.
        declared_length: The `Content-Length` header, if any (checked before reading a byte; one that is
            not a number counts as too large).
        limit: The most bytes accepted.
        timeout_s: The whole body must have arrived within this long.

    Raises:
        BodyTooLarge: the declared or the actual length is over `limit`.
        BodyTimeout: the body did not arrive in time.
    """
    if declared_length is not None:
        text = str(declared_length)
        # isascii: str.isdigit is also true for '²' and other Unicode digits, which int() refuses.
        if not (text.isascii() and text.isdigit()) or int(text) > limit:
            raise BodyTooLarge
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                parts.append(chunk)
    except TimeoutError:
        raise BodyTimeout from None
    return b"".join(parts)
