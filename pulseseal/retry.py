"""One retry policy for every loop that waits out a dependency: capped exponential backoff with jitter,
and a server's `Retry-After` honoured. Built on tenacity.

Used by the key-service client (a few attempts, `Retry-After` on 429/503), the sealer and the encryptor's
start-up (until the dependency is back, for as long as the process runs) and the importer's confirm
window (until a deadline). tenacity rather than stamina: each caller here must be able to inject its
sleep (unit tests never really wait), and stamina only offers a process-wide testing switch.

    answer = await retry(call, on=lambda exc: isinstance(exc, Unavailable), backoff=Backoff(cap_s=2.0),
                         attempts=4, sleep=sleep)

An exception may carry `retry_after_s` (a float, the server's `Retry-After`): that wait replaces the
backoff's for that attempt, bounded by `Backoff.max_retry_after_s`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_never
from tenacity.stop import stop_base

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, capped, with jitter.

    Attempt n (1 for the first retry) waits a random time in `[(1 - jitter) * d, d]` where
    `d = min(cap_s, initial_s * 2 ** (n - 1))`: `jitter=1` is "full jitter" (spreads many clients best),
    `0.5` keeps at least half the delay, `0` none.

    Args:
        initial_s: The first delay's ceiling.
        cap_s: The largest ceiling.
        jitter: Fraction of the delay that is random (0 to 1).
        max_retry_after_s: The longest `Retry-After` honoured; a longer one waits this long.
    """

    initial_s: float = 0.1
    cap_s: float = 5.0
    jitter: float = 0.5
    max_retry_after_s: float = 30.0

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The wait before retry number `retry` (1, 2, ...)."""
        # The exponent is bounded: a loop that retries for days must not overflow a float.
        ceiling = min(self.cap_s, self.initial_s * 2.0 ** min(max(0, retry - 1), 64))
        uniform = (rng or _RANDOM).uniform
        return uniform(ceiling * (1 - self.jitter), ceiling)


_RANDOM = random.Random()


def retry_after_s(header: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds a `Retry-After` header asks to wait (delta-seconds or an HTTP date); None if absent or
    unreadable (then the backoff applies)."""
    if header is None:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class _StopAfterAttempts(stop_base):
    def __init__(self, attempts: int | None, deadline: float | None, clock: Callable[[], float]) -> None:
        self._attempts, self._deadline, self._clock = attempts, deadline, clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self._attempts is not None and retry_state.attempt_number >= self._attempts:
            return True
        return self._deadline is not None and self._clock() >= self._deadline


async def retry(
    operation: Callable[[], Awaitable[T]],
    *,
    on: Callable[[BaseException], bool],
    backoff: Backoff,
    attempts: int | None = None,
    within_s: float | None = None,
    sleep: Sleep = asyncio.sleep,
    before_sleep: Callable[[BaseException, float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    failed: BaseException | None = None,
) -> T:
    """Run `operation` until it succeeds, retrying the failures `on` accepts.

    Args:
        operation: The attempt (called afresh each time).
        on: Whether a failure is worth another attempt; any other is raised at once.
        backoff: The waits between attempts.
        attempts: Attempts at most, the first included (None: no limit).
        within_s: Make no new attempt once this long has passed since the first; a wait never runs past
            that point (None: no limit). The last attempt is made at the deadline at the latest.
        sleep: The wait (injectable for tests).
        before_sleep: Called with the failure and the wait before each wait (logging, metrics).
        clock: Monotonic clock for `within_s` (injectable for tests).
        failed: The first attempt was already made and failed so (it counts as attempt 1): wait first.

    Raises:
        BaseException: the last failure, when it is not retried or the attempts or time ran out.
    """
    deadline = None if within_s is None else clock() + within_s

    def wait(state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome is not None else None
        asked = getattr(failure, "retry_after_s", None)
        if isinstance(asked, int | float) and not isinstance(asked, bool) and asked >= 0:
            delay = min(float(asked), backoff.max_retry_after_s)
        else:
            delay = backoff.delay(state.attempt_number)
        if deadline is not None:
            delay = max(0.0, min(delay, deadline - clock()))
        return delay

    async def announce(state: RetryCallState) -> None:
        failure = state.outcome.exception() if state.outcome is not None else None
        if before_sleep is not None and failure is not None and state.next_action is not None:
            before_sleep(failure, state.next_action.sleep)

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_never
        if attempts is None and deadline is None
        else _StopAfterAttempts(attempts, deadline, clock),
        wait=wait,
        retry=retry_if_exception(on),
        before_sleep=announce,
        reraise=True,
    )
    first = [failed] if failed is not None else []

    async def attempt() -> T:
        if first:
            raise first.pop()
        return await operation()

    return await retrying(attempt)
