"""Shred notices: every key-service replica announces its shreds, and streams everyone's to encryptors.

A shred is appended to a Redis stream `<prefix>shreds` on the key-store Redis (capped at
`KEPT_NOTICES`), so the notices of every replica reach the clients of every replica, and the key service
still talks to nothing but its own Redis. `GET /v1/shreds/stream` (wire/shreds.py) tails that stream with
`XREAD BLOCK` and sends each notice as a server-sent event; the client drops the user's keys from its
cache at once (keyservice/client/shreds.py). The notices hold user ids and times, never key material.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from keyservice.auth import RequestFacts, VerifiedCaller
from keyservice.wire.errors import KeyServiceError, KeyServiceUnavailable
from keyservice.wire.shreds import HEARTBEAT, HEARTBEAT_S, KEPT_NOTICES, SCOPE, sse_event

log = logging.getLogger(__name__)


class ShredNotices:
    """The notice stream of one key store.

    Args:
        redis: The key-store Redis.
        prefix: The key store's prefix.
        readers: A client of the same Redis for the streams' blocking reads (one connection each), owned
            by this object; default `redis`.
    """

    def __init__(self, redis: Redis, prefix: str, *, readers: Redis | None = None) -> None:
        self._redis = redis
        self._readers = readers
        self.key = f"{prefix}shreds"
        self.closing = False  # set when the process stops: every stream ends within a heartbeat

    async def close(self) -> None:
        """End the streams and close the readers' client."""
        self.closing = True
        if self._readers is not None:
            await self._readers.aclose()

    async def publish(self, user_id: str, destroyed_at: str) -> None:
        """Announce a shred to every replica's clients.

        Raises:
            KeyServiceUnavailable: Redis does not answer.
        """
        try:
            await self._redis.xadd(
                self.key, {b"u": user_id.encode(), b"at": destroyed_at.encode()}, maxlen=KEPT_NOTICES
            )
        except RedisError:
            raise KeyServiceUnavailable("the shred notice could not be sent") from None

    async def _position(self, last_id: str | None) -> tuple[str, bool]:
        """Where a stream starts, and whether the client must reset (its position is gone or invalid)."""
        info: Any = await self._redis.xinfo_stream(self.key) if await self._redis.exists(self.key) else None
        newest = info["last-generated-id"].decode() if info else "0-0"
        if last_id is None:
            return newest, False
        oldest = info["first-entry"][0].decode() if info and info.get("first-entry") else newest
        if not _valid_id(last_id) or _id_key(last_id) > _id_key(newest):
            return newest, True
        if info and info.get("first-entry") and _id_key(last_id) < _id_key(oldest) and last_id != "0-0":
            # Trimmed away: notices between the client's position and the oldest kept one may be lost.
            return newest, True
        return last_id, False

    async def events(self, last_id: str | None) -> AsyncIterator[bytes]:
        """The stream's bytes: `ready` (after a `reset` when needed), then notices and heartbeats.

        Raises:
            KeyServiceUnavailable: Redis does not answer when the stream starts.
        """
        try:
            position, reset = await self._position(last_id)
        except RedisError:
            raise KeyServiceUnavailable("the shred notices cannot be read") from None
        return self._tail(position, reset)

    async def _tail(self, position: str, reset: bool) -> AsyncIterator[bytes]:
        if reset:
            yield sse_event("reset", position, {})
        yield sse_event("ready", position, {})
        block_ms = int(HEARTBEAT_S * 1000)
        while not self.closing:
            try:
                reader = self._readers if self._readers is not None else self._redis
                replies: Any = await reader.xread({self.key: position}, count=500, block=block_ms)
            except RedisError:
                log.warning("shred notice stream: the key store stopped answering; closing the stream")
                return
            if not replies:
                yield HEARTBEAT
                continue
            for entry_id, fields in replies[0][1]:
                position = entry_id.decode()
                yield sse_event(
                    "shred",
                    position,
                    {"user_id": fields[b"u"].decode(), "destroyed_at": fields[b"at"].decode()},
                )


def _valid_id(text: str) -> bool:
    ms, sep, seq = text.partition("-")
    return bool(sep) and ms.isdigit() and seq.isdigit() and len(text) <= 41


def _id_key(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


Authenticate = Callable[[RequestFacts, str], Awaitable[VerifiedCaller]]
Problem = Callable[[KeyServiceError, str], Response]
Refuse = Callable[[str, KeyServiceError, str], Awaitable[object]]


def stream_route(
    notices: ShredNotices, authenticate: Authenticate, refuse: Refuse, problem: Problem
) -> Callable[[Request], Awaitable[Response]]:
    """The `GET /v1/shreds/stream` endpoint (wire/shreds.py): authenticated like every other, then held
    open. A refusal is an RFC 9457 problem, written to the audit log like every other."""

    async def route(request: Request) -> Response:
        request_id = uuid.uuid4().hex
        try:
            facts = RequestFacts(
                request.method,
                request.url.path,
                b"",
                request.client.host if request.client else "",
                request.headers.get("authorization"),
            )
            caller = await authenticate(facts, SCOPE)
            events = await notices.events(request.headers.get("last-event-id"))
        except KeyServiceError as exc:
            await refuse("shred_stream", exc, request_id)
            return problem(exc, request_id)
        log.info("shred notice stream opened for %s (request %s)", caller.caller_id, request_id)
        headers = {"Cache-Control": "no-store", "X-Request-ID": request_id, "X-Accel-Buffering": "no"}
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    return route
