"""What `POST /v1/events` does, free of HTTP: authenticate, read, validate, authorise, publish, confirm.

All or nothing: any invalid event, or any event of another user, refuses the whole request before a
byte is published. A request is answered accepted only after the broker confirmed every message that
carries its events; when that fails (broker down, nack, no confirm in time) it is answered 503 and the
client retries — some of its messages may have been stored, which is harmless because `event_id` is
the idempotency key downstream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from producers.gateway.auth import TokenVerifier
from producers.gateway.bodies import media_type, parse_body, read_body
from producers.gateway.errors import Forbidden, ItemError, Unavailable
from producers.ndjson import pack_ndjson
from producers.publisher import Publisher, PublishFailed
from pulseseal.topology import BATCH_ROUTING_KEY, JSON, NDJSON, routing_key_for
from schemas import HealthEvent, canonical_json

log = logging.getLogger("pulseseal.gateway")


@dataclass(frozen=True, slots=True)
class Accepted:
    """Events the broker confirmed, in request order."""

    event_ids: tuple[str, ...]


class EventIntake:
    """The gateway's one service function and what it needs.

    Args:
        verifier: Verifies user tokens.
        publisher: The confirmed publisher.
        body_timeout_s: A body must arrive within this long.
        confirm_timeout_s: Every message must be confirmed within this long.
        clock: The clock for the 24 h future bound (injectable for tests).
    """

    def __init__(
        self,
        verifier: TokenVerifier,
        publisher: Publisher,
        *,
        body_timeout_s: float,
        confirm_timeout_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.verifier = verifier
        self.publisher = publisher
        self._body_timeout_s = body_timeout_s
        self._confirm_timeout_s = confirm_timeout_s
        self._clock = clock

    async def accept(
        self,
        *,
        authorization: str | None,
        content_type: str | None,
        content_length: int | None,
        chunks: AsyncIterable[bytes],
    ) -> Accepted:
        """Take one request's events and return once the broker has confirmed all of them.

        The token is checked before the body is read, so an unauthenticated client cannot make the
        gateway buffer anything.

        Raises:
            GatewayError: the subclass says why (401, 403, 408, 413, 415, 422 or 503).
        """
        user = self.verifier.verify(authorization)
        kind = media_type(content_type)
        body = await read_body(chunks, declared_length=content_length, timeout_s=self._body_timeout_s)
        events = parse_body(body, kind, now=self._clock())
        foreign = [i for i, event in enumerate(events) if event.user_id != user.user_id]
        if foreign:
            raise Forbidden(
                "every event's user_id must be the token's subject",
                [ItemError(i, "user_id", "must equal the token's subject") for i in foreign],
            )
        await self._publish(events)
        return Accepted(tuple(event.event_id for event in events))

    async def _publish(self, events: list[HealthEvent]) -> None:
        if len(events) == 1:
            jobs = [self._one(canonical_json(events[0]), JSON, routing_key_for(events[0].type))]
        else:
            # One NDJSON message per request; more only when canonical JSON outgrows 1 MiB.
            bodies = pack_ndjson([canonical_json(event) for event in events])
            jobs = [self._one(body, NDJSON, BATCH_ROUTING_KEY) for body, _ in bodies]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            first = failures[0]
            if isinstance(first, PublishFailed):
                log.warning("publish failed", extra={"reason": str(first), "events": len(events)})
                raise Unavailable("the event broker is unavailable; retry later") from None
            raise first

    async def _one(self, body: bytes, content_type: str, routing_key: str) -> None:
        await self.publisher.publish(
            body, routing_key=routing_key, content_type=content_type, timeout_s=self._confirm_timeout_s
        )
