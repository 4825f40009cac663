"""The key service's edge defences, applied before and after a route's own work (docs/threat-model.md).

- **Peers first.** A TCP peer that is in no caller's networks is refused (403) before its body is read.
- **Bodies on a deadline.** A body must arrive within the body timeout (408), so a slow client cannot
  hold a request open.
- **Refusals are rate limited per peer** by a token bucket: at least 50 a second in bursts of at least 200
  (contract §6); beyond that a refusal answers 429 with `Retry-After`. Requests that succeed never spend
  tokens, so a legitimate caller sharing a peer address with a flood still gets its answers.
- **Unauthenticated refusals are counted, not copied.** The first refusal of a kind (source address,
  action, reason, claimed caller) in each one-second window is written to the audit log at once; the
  rest of that window are written as one record carrying `counts: {"refused": n}`. A junk-token flood
  therefore costs the audit log a few records a second, not one per request, and none is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from keyservice.callers import CallerRegistry
from keyservice.wire.errors import (
    CallerNotAllowed,
    KeyServiceError,
    RequestTimeout,
    RequestTooLarge,
    TooManyRefusals,
)
from pulseseal.bodies import BodyTimeout, BodyTooLarge, read_limited

log = logging.getLogger(__name__)
Clock = Callable[[], float]
#: (source address, action, reason, claimed caller): what makes two refusals "the same kind".
TallyKey = tuple[str, str, str, str | None]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class RefusalLimiter:
    """A token bucket of refusals per peer address.

    Args:
        rate: Tokens a second (refusals a peer may make indefinitely).
        burst: Bucket size (refusals a peer may make at once).
        clock: Monotonic seconds (injectable for tests).
        max_peers: Buckets kept at most; the fullest are forgotten first (they hold the least information).
    """

    def __init__(
        self, rate: float = 50.0, burst: int = 200, *, clock: Clock = time.monotonic, max_peers: int = 65_536
    ) -> None:
        self._rate, self._burst, self._clock, self._max_peers = rate, float(burst), clock, max_peers
        self._buckets: dict[str, _Bucket] = {}

    def take(self, peer: str) -> int | None:
        """Spend one token for a refusal of `peer`: None when it had one, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self._max_peers:
                self._forget_full(now)
            bucket = self._buckets[peer] = _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.stamp) * self._rate)
        bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - bucket.tokens) / self._rate))

    def _forget_full(self, now: float) -> None:
        # The fullest half goes: a full bucket is what a forgotten peer gets anyway, and the emptiest
        # buckets are the flooders', which must be remembered.
        def level(peer: str) -> float:
            bucket = self._buckets[peer]
            return bucket.tokens + (now - bucket.stamp) * self._rate

        for peer in sorted(self._buckets, key=level, reverse=True)[: max(1, len(self._buckets) // 2)]:
            del self._buckets[peer]


#: Writes one audit record for a kind of refusal, a count (None: one refusal, written as it happened)
#: and a request id.
WriteRefusal = Callable[[TallyKey, int | None, str], Awaitable[None]]


@dataclass
class RefusalTally:
    """Counts repeated unauthenticated refusals and writes them as counted records once a window.

    Args:
        write: Writes one audit record (see `WriteRefusal`).
        window_s: Length of a counting window.
    """

    write: WriteRefusal
    window_s: float = 1.0
    _counts: dict[TallyKey, int] = field(default_factory=dict)
    _flusher: asyncio.Task[None] | None = None

    async def refused(self, key: TallyKey, request_id: str) -> bool:
        """One refusal: written now if it is the first of its kind in this window, else counted.

        Returns:
            True when it was written as a record of its own, False when it was counted.

        Raises:
            KeyServiceUnavailable: the audit log cannot take the record (the caller answers 503).
        """
        if key in self._counts:
            self._counts[key] += 1
            return False
        # The window is opened before the write is awaited: refusals of the same kind arriving meanwhile
        # are counted into it instead of each being written (and overwriting each other's counts).
        self._counts[key] = 0
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        await self.write(key, None, request_id)
        return True

    async def flush(self) -> None:
        """Write one counted record per kind with repeats in the closing window, and open a new window.

        A kind whose record cannot be written keeps its count for the next flush: nothing is dropped.
        """
        counts, self._counts = self._counts, {}
        for key, count in counts.items():
            if not count:
                continue
            try:
                # A counted record has a request id of its own: it stands for many requests.
                await self.write(key, count, uuid.uuid4().hex)
            except KeyServiceError:
                log.error("could not write a counted refusal record (%d refusals); retrying", count)
                self._counts[key] = self._counts.get(key, 0) + count

    async def _flush_loop(self) -> None:
        while self._counts:
            await asyncio.sleep(self.window_s)
            await self.flush()

    async def close(self) -> None:
        """Write what is counted and stop the flusher."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self.flush()


class Edge:
    """The checks around every authenticated route.

    Args:
        registry: The callers file: the union of its networks is who may send a body at all.
        body_timeout_s: Deadline for a whole request body.
        limiter: Refusal rate limit per peer.
    """

    def __init__(self, registry: CallerRegistry, *, body_timeout_s: float, limiter: RefusalLimiter) -> None:
        self._registry = registry
        self.body_timeout_s = body_timeout_s
        self.limiter = limiter

    def admit(self, peer: str) -> None:
        """Refuse a peer that no caller may call from, before anything of its request is read.

        Raises:
            CallerNotAllowed: the peer is in no caller's networks.
        """
        if not self._registry.allows_peer(peer):
            raise CallerNotAllowed("source network not allowed", reason="network_not_allowed")

    async def read_body(self, request: Request, max_bytes: int) -> bytes:
        """The whole body, at most `max_bytes`, within the body timeout.

        Raises:
            RequestTooLarge: the body (or its announced length) is over `max_bytes`.
            RequestTimeout: the body did not arrive in time.
        """
        try:
            return await read_limited(
                request.stream(),
                declared_length=request.headers.get("content-length"),
                limit=max_bytes,
                timeout_s=self.body_timeout_s,
            )
        except BodyTooLarge:
            raise RequestTooLarge(f"body over {max_bytes} bytes") from None
        except BodyTimeout:
            raise RequestTimeout(f"request body not received within {self.body_timeout_s:g} s") from None

    def limit(self, peer: str, error: KeyServiceError) -> KeyServiceError:
        """The refusal to answer: `error`, or 429 when this peer is over its refusal budget."""
        retry_after = self.limiter.take(peer)
        if retry_after is None:
            return error
        limited = TooManyRefusals(
            f"too many refused requests from this address; retry after {retry_after} s",
            retry_after_s=retry_after,
        )
        limited.caller_id = error.caller_id
        return limited


def tally_key(peer: str, action: str, error: KeyServiceError) -> TallyKey:
    """The kind of an unauthenticated refusal."""
    return (peer, action, error.reason, error.caller_id)
